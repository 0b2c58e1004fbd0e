# MT3004 pss-capabilities-baseline: Pod Security Standards, baseline, v1.0+ -
# containers add no capability beyond the runtime's default set. Under
# restricted from v1.22 MT3018 pss-capabilities-restricted replaces it (as PSA
# overrides this check there). See README.md in this folder.
package kubernetes.admission.pss_capabilities_baseline

import rego.v1

policy_metadata := {
	"name": "pss-capabilities-baseline",
	"severity": "HIGH",
	"errcode": "MT3004",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
	not replaced_by_restricted
}

replaced_by_restricted if {
	data.magtape.lib.pod_security.restricted_applies
	data.magtape.lib.pod_security.version >= 22
}

allowed := {
	"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}

# [container, the capabilities it adds outside `allowed`].
adding := [[c, extra] |
	some c in data.magtape.lib.pod_security.containers
	added := data.magtape.lib.workloads.list(data.magtape.lib.workloads.get(c.sc, "capabilities", {}), "add")
	extra := [data.magtape.lib.pod_security.quoted(cap) | some cap in added; not cap in allowed]
	count(extra) > 0
]

deny contains info if {
	matches
	some [c, extra] in adding
	info := data.magtape.lib.pod_security.container_failure(
		"pss-capabilities-baseline", "MT3004", "baseline", c, "securityContext.capabilities.add",
		concat("", ["adds ", concat(", ", extra), " in securityContext.capabilities.add"]),
		"only AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT",
	)
}
