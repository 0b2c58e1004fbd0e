# MT3017 pss-seccomp-restricted: Pod Security Standards, restricted, v1.19+ -
# every container runs under a seccomp profile: securityContext.seccompProfile
# .type RuntimeDefault or Localhost, on the container or inherited from the
# pod. Windows pods (spec.os.name: windows) are exempt from v1.25. Before
# v1.19 restricted asks only what baseline does (MT3010).
# See README.md in this folder.
package kubernetes.admission.pss_seccomp_restricted

import rego.v1

policy_metadata := {
	"name": "pss-seccomp-restricted",
	"severity": "HIGH",
	"errcode": "MT3017",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.restricted_applies
	data.magtape.lib.pod_security.version >= 19
	not data.magtape.lib.pod_security.windows_exempt
}

allowed_types := {"RuntimeDefault", "Localhost"}

allowed_text := "securityContext.seccompProfile.type RuntimeDefault or Localhost, on the container or the pod"

pod_profile := object.get(data.magtape.lib.pod_security.pod_security_context, "seccompProfile", null)

pod_valid if {
	is_object(pod_profile)
	object.get(pod_profile, "type", "") in allowed_types
}

deny contains info if {
	matches
	is_object(pod_profile)
	not pod_valid
	info := data.magtape.lib.pod_security.pod_failure(
		"pss-seccomp-restricted", "MT3017", "restricted", "securityContext.seccompProfile.type",
		concat("", ["securityContext.seccompProfile.type=", data.magtape.lib.pod_security.text(object.get(pod_profile, "type", ""))]),
		allowed_text,
	)
}

# [container, what it does wrong].
unconfined := [[c, problem] |
	some c in data.magtape.lib.pod_security.containers
	problem := container_problem(object.get(c.sc, "seccompProfile", null))
]

container_problem(profile) := concat("", ["sets securityContext.seccompProfile.type=", data.magtape.lib.pod_security.text(object.get(profile, "type", ""))]) if {
	is_object(profile)
	not object.get(profile, "type", "") in allowed_types
}

container_problem(profile) := "does not set securityContext.seccompProfile, nor does the pod" if {
	not is_object(profile)
	not pod_valid
}

deny contains info if {
	matches
	some [c, problem] in unconfined
	info := data.magtape.lib.pod_security.container_failure(
		"pss-seccomp-restricted", "MT3017", "restricted", c, "securityContext.seccompProfile.type",
		problem, allowed_text,
	)
}
