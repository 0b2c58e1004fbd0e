# MT3002 pss-host-namespaces: Pod Security Standards, baseline, v1.0+ - the
# pod shares none of the node's network, PID or IPC namespaces.
# See README.md in this folder.
package kubernetes.admission.pss_host_namespaces

import rego.v1

policy_metadata := {
	"name": "pss-host-namespaces",
	"severity": "HIGH",
	"errcode": "MT3002",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
}

# The host namespace fields the pod sets to true.
shared := [f |
	some f in ["hostNetwork", "hostPID", "hostIPC"]
	data.magtape.lib.pod_security.pod_spec[f] == true
]

deny contains info if {
	matches
	count(shared) > 0
	prefix := concat("", [data.magtape.lib.pod_security.spec_path, "."])
	set_fields := [concat("", [prefix, f, "=true"]) | some f in shared]
	info := data.magtape.lib.pod_security.failure(
		"pss-host-namespaces", "MT3002", "baseline", "pod",
		concat("", ["sets ", concat(", ", set_fields)]), "false or unset",
		{"field": concat(", ", [concat("", [prefix, f]) | some f in shared])},
	)
}
