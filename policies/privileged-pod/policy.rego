# MT2001 privileged-pod: no container (init and ephemeral ones included) runs
# privileged, i.e. with the node's devices and all capabilities.
# See README.md in this folder.
package kubernetes.admission.privileged_pod

import rego.v1

policy_metadata := {
	"name": "privileged-pod",
	"severity": "HIGH",
	"errcode": "MT2001",
	"targets": data.magtape.lib.workloads.kinds,
}

# data.magtape.lib.workloads.is_workload tests exactly policy_metadata.targets, once per
# request for every pod check.
matches if data.magtape.lib.workloads.is_workload

# Names of the privileged containers. Containers are gathered in a
# comprehension, keeping only what the messages need (docs/policies.md,
# "Rules of thumb").
privileged := [object.get(container, "name", "") |
	some container in data.magtape.lib.workloads.all_containers
	container.securityContext.privileged == true
]

deny contains info if {
	matches

	# Under a Pod Security Standards level MT3003 reports this field instead
	# (docs/pod-security.md, "Overlaps"): one failure per field, never two.
	not data.magtape.lib.pod_security.baseline_applies
	some name in privileged

	# Built inline rather than with data.magtape.lib.messages.failure: this runs once per failing
	# container, and helper calls dominate its cost (docs/performance.md).
	info := {
		"name": "privileged-pod", "severity": "HIGH", "errcode": "MT2001",
		"msg": concat("", ["[FAIL] HIGH - Found privileged Security Context for container \"", data.magtape.lib.messages.str(name), "\" (MT2001)"]),
		"details": {"container": name},
	}
}
