package test.kubernetes.admission.pss_privileged

import rego.v1

import data.kubernetes.admission.pss_privileged as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

test_privileged_containers_fail_in_every_list_and_kind if {
	spec := {
		"initContainers": [pss.container("init", {"privileged": true})],
		"containers": [pss.container("app", {"privileged": true}), pss.container("ok", {"privileged": false})],
		"ephemeralContainers": [pss.container("debug", {"privileged": true})],
	}
	every kind in pss.kinds {
		count(denies(pss.request(kind, {}, spec), "baseline", "v1.0")) == 3
	}
	msgs(pss.pod(spec), "restricted", "latest") == {
		"[FAIL] HIGH - container \"init\" sets securityContext.privileged=true; baseline requires false or unset (MT3003)",
		"[FAIL] HIGH - container \"app\" sets securityContext.privileged=true; baseline requires false or unset (MT3003)",
		"[FAIL] HIGH - container \"debug\" sets securityContext.privileged=true; baseline requires false or unset (MT3003)",
	}
}

test_unprivileged_passes if {
	count(denies(pss.pod({"containers": [pss.container("a", {"privileged": false}), pss.container("b", {})]}), "restricted", "latest")) == 0
}

test_no_level_leaves_it_to_mt2001 if {
	req := pss.pod({"containers": [pss.container("app", {"privileged": true})]})
	count(denies(req, "privileged", "latest")) == 0
	mt2001 := data.kubernetes.admission.privileged_pod.deny with input.request as req
	count(mt2001) == 1
	silenced := data.kubernetes.admission.privileged_pod.deny with input.request as req with data.magtape.pod_security as pss.setting("baseline", "latest")
	count(silenced) == 0
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {"privileged": true})]}), "baseline", "latest")
	[d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]
	d.details.image == "registry.example.com/app:1.0"
}
