# MT3001 pss-host-process: Pod Security Standards, baseline, v1.0+ - no
# Windows HostProcess pod or container. See README.md in this folder.
package kubernetes.admission.pss_host_process

import rego.v1

policy_metadata := {
	"name": "pss-host-process",
	"severity": "HIGH",
	"errcode": "MT3001",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
}

host_process_containers := [c |
	some c in data.magtape.lib.pod_security.containers
	c.sc.windowsOptions.hostProcess == true
]

deny contains info if {
	matches
	data.magtape.lib.pod_security.pod_security_context.windowsOptions.hostProcess == true
	info := data.magtape.lib.pod_security.pod_failure(
		"pss-host-process", "MT3001", "baseline", "securityContext.windowsOptions.hostProcess",
		"securityContext.windowsOptions.hostProcess=true", "false or unset",
	)
}

deny contains info if {
	matches
	some c in host_process_containers
	info := data.magtape.lib.pod_security.container_failure(
		"pss-host-process", "MT3001", "baseline", c, "securityContext.windowsOptions.hostProcess",
		"sets securityContext.windowsOptions.hostProcess=true", "false or unset",
	)
}
