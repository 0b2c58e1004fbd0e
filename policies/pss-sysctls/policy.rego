# MT3011 pss-sysctls: Pod Security Standards, baseline, v1.0+ - the pod sets
# only the safe, namespaced sysctls; the list grows with the version (v1.27,
# v1.29, v1.32, v1.37). See README.md in this folder.
package kubernetes.admission.pss_sysctls

import rego.v1

policy_metadata := {
	"name": "pss-sysctls",
	"severity": "HIGH",
	"errcode": "MT3011",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
}

allowed_1_0 := {
	"kernel.shm_rmid_forced",
	"net.ipv4.ip_local_port_range",
	"net.ipv4.tcp_syncookies",
	"net.ipv4.ping_group_range",
	"net.ipv4.ip_unprivileged_port_start",
}

added_1_27 := {"net.ipv4.ip_local_reserved_ports"}

added_1_29 := {
	"net.ipv4.tcp_keepalive_time",
	"net.ipv4.tcp_fin_timeout",
	"net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes",
}

added_1_32 := {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}

added_1_37 := {"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}

allowed := (((allowed_1_0 | added_1_27) | added_1_29) | added_1_32) | added_1_37 if {
	data.magtape.lib.pod_security.version >= 37
} else := ((allowed_1_0 | added_1_27) | added_1_29) | added_1_32 if {
	data.magtape.lib.pod_security.version >= 32
} else := (allowed_1_0 | added_1_27) | added_1_29 if {
	data.magtape.lib.pod_security.version >= 29
} else := allowed_1_0 | added_1_27 if {
	data.magtape.lib.pod_security.version >= 27
} else := allowed_1_0

sysctls := data.magtape.lib.workloads.list(data.magtape.lib.pod_security.pod_security_context, "sysctls")

forbidden := [data.magtape.lib.pod_security.quoted(name) |
	some sysctl in sysctls
	name := data.magtape.lib.workloads.get(sysctl, "name", "")
	not name in allowed
]

deny contains info if {
	matches
	count(forbidden) > 0
	info := data.magtape.lib.pod_security.pod_failure(
		"pss-sysctls", "MT3011", "baseline", "securityContext.sysctls[*].name",
		concat("", ["securityContext.sysctls[*].name=", concat(", ", forbidden)]),
		concat("", ["only ", concat(", ", sort(allowed)), " (", data.magtape.lib.pod_security.version_text, ")"]),
	)
}
