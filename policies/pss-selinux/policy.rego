# MT3008 pss-selinux: Pod Security Standards, baseline, v1.0+ - no custom
# SELinux user or role, and only the container types (container_engine_t
# from v1.31). See README.md in this folder.
package kubernetes.admission.pss_selinux

import rego.v1

policy_metadata := {
	"name": "pss-selinux",
	"severity": "HIGH",
	"errcode": "MT3008",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
}

allowed_types := {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"} if {
	data.magtape.lib.pod_security.version >= 31
} else := {"", "container_t", "container_init_t", "container_kvm_t"}

allowed_text := concat("", [
	"seLinuxOptions.type ",
	concat(", ", sort([t | some t in allowed_types; t != ""])),
	" or unset, and no seLinuxOptions.user or seLinuxOptions.role",
])

# What is wrong with seLinuxOptions `opts` (empty when nothing is).
problems(opts) := [p |
	some field in ["type", "user", "role"]
	bad_field(opts, field)
	p := concat("", ["seLinuxOptions.", field, "=", data.magtape.lib.pod_security.quoted(field_value(opts, field))])
]

bad_field(opts, "type") if not field_value(opts, "type") in allowed_types

bad_field(opts, "user") if field_value(opts, "user") != ""

bad_field(opts, "role") if field_value(opts, "role") != ""

# field_value(opts, f): opts[f], "" when unset or null (as the API reads it).
field_value(opts, f) := opts[f] if {
	opts[f] != null
} else := ""

bad_containers := [[c, found] |
	some c in data.magtape.lib.pod_security.containers
	opts := object.get(c.sc, "seLinuxOptions", null)
	is_object(opts)
	found := problems(opts)
	count(found) > 0
]

deny contains info if {
	matches
	opts := data.magtape.lib.pod_security.pod_security_context.seLinuxOptions
	is_object(opts)
	found := problems(opts)
	count(found) > 0
	info := data.magtape.lib.pod_security.pod_failure(
		"pss-selinux", "MT3008", "baseline", "securityContext.seLinuxOptions",
		concat("", ["securityContext.", concat(", securityContext.", found)]), allowed_text,
	)
}

deny contains info if {
	matches
	some [c, found] in bad_containers
	info := data.magtape.lib.pod_security.container_failure(
		"pss-selinux", "MT3008", "baseline", c, "securityContext.seLinuxOptions",
		concat("", ["sets securityContext.", concat(", securityContext.", found)]), allowed_text,
	)
}
