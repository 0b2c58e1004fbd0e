# MT3009 pss-proc-mount: Pod Security Standards, baseline, v1.0+ - the
# default /proc masks stay on (securityContext.procMount unset or Default).
# From v1.35 baseline allows any procMount in a pod with its own user
# namespace (spec.hostUsers: false); restricted never does.
# See README.md in this folder.
package kubernetes.admission.pss_proc_mount

import rego.v1

policy_metadata := {
	"name": "pss-proc-mount",
	"severity": "HIGH",
	"errcode": "MT3009",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
	not relaxed
}

# Baseline v1.35+: a pod in a user namespace may unmask /proc.
relaxed if {
	not data.magtape.lib.pod_security.restricted_applies
	data.magtape.lib.pod_security.version >= 35
	data.magtape.lib.pod_security.user_namespace
}

unmasked := [c |
	some c in data.magtape.lib.pod_security.containers
	object.get(c.sc, "procMount", null) != null
	c.sc.procMount != "Default"
]

deny contains info if {
	matches
	some c in unmasked
	level := level_word
	info := data.magtape.lib.pod_security.container_failure(
		"pss-proc-mount", "MT3009", level, c, "securityContext.procMount",
		concat("", ["sets securityContext.procMount=", data.magtape.lib.pod_security.text(c.sc.procMount)]),
		"Default or unset",
	)
}

level_word := "restricted" if {
	data.magtape.lib.pod_security.restricted_applies
	data.magtape.lib.pod_security.user_namespace
	data.magtape.lib.pod_security.version >= 35
} else := "baseline"
