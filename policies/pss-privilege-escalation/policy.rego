# MT3014 pss-privilege-escalation: Pod Security Standards, restricted, v1.8+
# (the field's first release) - every container sets
# securityContext.allowPrivilegeEscalation: false. Windows pods
# (spec.os.name: windows) are exempt from v1.25. See README.md in this folder.
package kubernetes.admission.pss_privilege_escalation

import rego.v1

policy_metadata := {
	"name": "pss-privilege-escalation",
	"severity": "HIGH",
	"errcode": "MT3014",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.restricted_applies
	data.magtape.lib.pod_security.version >= 8
	not data.magtape.lib.pod_security.windows_exempt
}

escalating := [c |
	some c in data.magtape.lib.pod_security.containers
	object.get(c.sc, "allowPrivilegeEscalation", null) != false
]

deny contains info if {
	matches
	some c in escalating
	info := data.magtape.lib.pod_security.container_failure(
		"pss-privilege-escalation", "MT3014", "restricted", c, "securityContext.allowPrivilegeEscalation",
		problem(object.get(c.sc, "allowPrivilegeEscalation", null)), "false",
	)
}

problem(value) := "does not set securityContext.allowPrivilegeEscalation" if {
	value == null
} else := concat("", ["sets securityContext.allowPrivilegeEscalation=", data.magtape.lib.pod_security.text(value)])
