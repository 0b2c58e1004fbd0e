# MT3016 pss-run-as-user: Pod Security Standards, restricted, v1.23+ - no
# runAsUser 0 (root) on the pod or a container. From v1.35 a pod in its own
# user namespace (spec.hostUsers: false) is exempt. See README.md in this
# folder.
package kubernetes.admission.pss_run_as_user

import rego.v1

policy_metadata := {
	"name": "pss-run-as-user",
	"severity": "HIGH",
	"errcode": "MT3016",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.restricted_applies
	data.magtape.lib.pod_security.version >= 23
	not data.magtape.lib.pod_security.user_namespace_exempt
}

root_containers := [c |
	some c in data.magtape.lib.pod_security.containers
	c.sc.runAsUser == 0
]

deny contains info if {
	matches
	data.magtape.lib.pod_security.pod_security_context.runAsUser == 0
	info := data.magtape.lib.pod_security.pod_failure(
		"pss-run-as-user", "MT3016", "restricted", "securityContext.runAsUser",
		"securityContext.runAsUser=0", "a non-zero user or unset",
	)
}

deny contains info if {
	matches
	some c in root_containers
	info := data.magtape.lib.pod_security.container_failure(
		"pss-run-as-user", "MT3016", "restricted", c, "securityContext.runAsUser",
		"sets securityContext.runAsUser=0", "a non-zero user or unset",
	)
}
