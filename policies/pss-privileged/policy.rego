# MT3003 pss-privileged: Pod Security Standards, baseline, v1.0+ - no
# privileged container. In a namespace under a PSS level this check reports
# what MT2001 privileged-pod reports elsewhere (docs/pod-security.md).
# See README.md in this folder.
package kubernetes.admission.pss_privileged

import rego.v1

policy_metadata := {
	"name": "pss-privileged",
	"severity": "HIGH",
	"errcode": "MT3003",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
}

privileged := [c |
	some c in data.magtape.lib.pod_security.containers
	c.sc.privileged == true
]

deny contains info if {
	matches
	some c in privileged
	info := data.magtape.lib.pod_security.container_failure(
		"pss-privileged", "MT3003", "baseline", c, "securityContext.privileged",
		"sets securityContext.privileged=true", "false or unset",
	)
}
