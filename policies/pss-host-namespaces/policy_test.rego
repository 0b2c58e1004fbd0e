package test.kubernetes.admission.pss_host_namespaces

import rego.v1

import data.kubernetes.admission.pss_host_namespaces as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

test_each_host_namespace_fails if {
	every field in ["hostNetwork", "hostPID", "hostIPC"] {
		every version in pss.versions {
			count(denies(pss.pod({field: true, "containers": [pss.container("app", {})]}), "baseline", version)) == 1
		}
	}
}

test_one_failure_names_every_shared_namespace if {
	spec := {"hostNetwork": true, "hostIPC": true, "containers": [pss.container("app", {})]}
	msgs(pss.request("CronJob", {}, spec), "restricted", "latest") == {"[FAIL] HIGH - pod sets spec.jobTemplate.spec.template.spec.hostNetwork=true, spec.jobTemplate.spec.template.spec.hostIPC=true; baseline requires false or unset (MT3002)"}
}

test_false_passes_and_privileged_allows if {
	count(denies(pss.pod({"hostNetwork": false, "hostPID": false, "containers": [pss.container("app", {})]}), "restricted", "latest")) == 0
	count(denies(pss.pod({"hostNetwork": true, "containers": [pss.container("app", {})]}), "privileged", "latest")) == 0
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"hostPID": true}), "baseline", "latest")
	d.errcode == policy.policy_metadata.errcode
	d.name == policy.policy_metadata.name
	d.severity == policy.policy_metadata.severity
}
