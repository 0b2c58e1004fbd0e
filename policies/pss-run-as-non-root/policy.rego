# MT3015 pss-run-as-non-root: Pod Security Standards, restricted, v1.0+ -
# containers must run as non-root: runAsNonRoot true on the pod or on every
# container, and false nowhere. From v1.35 a pod in its own user namespace
# (spec.hostUsers: false) is exempt. See README.md in this folder.
package kubernetes.admission.pss_run_as_non_root

import rego.v1

policy_metadata := {
	"name": "pss-run-as-non-root",
	"severity": "HIGH",
	"errcode": "MT3015",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.restricted_applies
	not data.magtape.lib.pod_security.user_namespace_exempt
}

pod_value := object.get(data.magtape.lib.pod_security.pod_security_context, "runAsNonRoot", null)

# [container, its runAsNonRoot] of each container that sets false, or sets
# nothing while the pod does not set true.
root_containers := [[c, value] |
	some c in data.magtape.lib.pod_security.containers
	value := object.get(c.sc, "runAsNonRoot", null)
	bad(value)
]

bad(value) if value == false

bad(null) if pod_value != true

deny contains info if {
	matches
	pod_value == false
	info := data.magtape.lib.pod_security.pod_failure(
		"pss-run-as-non-root", "MT3015", "restricted", "securityContext.runAsNonRoot",
		"securityContext.runAsNonRoot=false", "true",
	)
}

deny contains info if {
	matches
	some [c, value] in root_containers
	info := data.magtape.lib.pod_security.container_failure(
		"pss-run-as-non-root", "MT3015", "restricted", c, "securityContext.runAsNonRoot",
		problem(value), "true (on the container, or on the pod)",
	)
}

problem(false) := "sets securityContext.runAsNonRoot=false"

problem(null) := "does not set securityContext.runAsNonRoot, nor does the pod"
