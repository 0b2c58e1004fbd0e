package test.kubernetes.admission.pss_proc_mount

import rego.v1

import data.kubernetes.admission.pss_proc_mount as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_unmasked_fails_at_every_version if {
	spec := {"containers": [pss.container("app", {"procMount": "Unmasked"}), pss.container("ok", {"procMount": "Default"})]}
	every version in pss.versions {
		msgs(pss.request("DaemonSet", {}, spec), "baseline", version) == {"[FAIL] HIGH - container \"app\" sets securityContext.procMount=Unmasked; baseline requires Default or unset (MT3009)"}
		count(denies(pss.request("DaemonSet", {}, spec), "restricted", version)) == 1
	}
}

test_user_namespaces_relax_baseline_from_v1_35_only if {
	spec := {"hostUsers": false, "containers": [pss.container("app", {"procMount": "Unmasked"})]}
	every version in pss.versions {
		count(denies(pss.pod(spec), "baseline", version)) == expected(version)
		count(denies(pss.pod(spec), "restricted", version)) == 1
	}
	count(denies(pss.pod(object.union(spec, {"hostUsers": true})), "baseline", "latest")) == 1
}

expected(version) := 1 if pss.minor(version) < 35
else := 0

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {"procMount": "Unmasked"})]}), "baseline", "latest")
	metadata_ok(d)
}
