package test.kubernetes.admission.pss_sysctls

import rego.v1

import data.kubernetes.admission.pss_sysctls as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

sysctl_pod(names) := pss.pod({"securityContext": {"sysctls": [{"name": n, "value": "1"} | some n in names]}, "containers": [pss.container("app", {})]})

test_unsafe_sysctls_fail if {
	msgs(sysctl_pod(["kernel.msgmax", "net.ipv4.tcp_syncookies", "vm.swappiness"]), "baseline", "v1.0") == {"[FAIL] HIGH - pod sets spec.securityContext.sysctls[*].name=\"kernel.msgmax\", \"vm.swappiness\"; baseline requires only kernel.shm_rmid_forced, net.ipv4.ip_local_port_range, net.ipv4.ip_unprivileged_port_start, net.ipv4.ping_group_range, net.ipv4.tcp_syncookies (v1.0) (MT3011)"}
}

# The first version each sysctl is allowed at.
allowed_from := {
	"kernel.shm_rmid_forced": 0,
	"net.ipv4.ip_local_port_range": 0,
	"net.ipv4.tcp_syncookies": 0,
	"net.ipv4.ping_group_range": 0,
	"net.ipv4.ip_unprivileged_port_start": 0,
	"net.ipv4.ip_local_reserved_ports": 27,
	"net.ipv4.tcp_keepalive_time": 29,
	"net.ipv4.tcp_fin_timeout": 29,
	"net.ipv4.tcp_keepalive_intvl": 29,
	"net.ipv4.tcp_keepalive_probes": 29,
	"net.ipv4.tcp_rmem": 32,
	"net.ipv4.tcp_wmem": 32,
	"net.ipv4.tcp_slow_start_after_idle": 37,
	"net.ipv4.tcp_notsent_lowat": 37,
}

test_the_allowed_set_grows_by_version if {
	every name, since in allowed_from {
		every version in ["v1.0", "v1.26", "v1.27", "v1.28", "v1.29", "v1.31", "v1.32", "v1.36", "v1.37"] {
			count(denies(sysctl_pod([name]), "baseline", version)) == expected(since, version)
		}
	}
}

expected(since, version) := 0 if pss.minor(version) >= since
else := 1

test_failures_carry_the_policy_metadata if {
	some d in denies(sysctl_pod(["kernel.sem"]), "restricted", "latest")
	metadata_ok(d)
}
