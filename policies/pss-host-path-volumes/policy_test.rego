package test.kubernetes.admission.pss_host_path_volumes

import rego.v1

import data.kubernetes.admission.pss_host_path_volumes as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

test_host_path_volumes_fail_under_baseline if {
	spec := {"volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "tmp", "emptyDir": {}}], "containers": [pss.container("app", {})]}
	every version in pss.versions {
		msgs(pss.request("Deployment", {}, spec), "baseline", version) == {"[FAIL] HIGH - volume \"root\" uses hostPath; baseline requires no hostPath volume (MT3005)"}
	}
}

test_restricted_reports_it_as_a_volume_type if {
	spec := {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}
	count(denies(pss.pod(spec), "restricted", "latest")) == 0
	count(data.kubernetes.admission.pss_volume_types.deny) == 1 with input.request as pss.pod(spec) with data.magtape.pod_security as pss.setting("restricted", "latest")
}

test_mt1010_is_silent_under_a_level if {
	req := pss.pod({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]})
	count(data.kubernetes.admission.host_path.deny) == 1 with input.request as req
	count(data.kubernetes.admission.host_path.deny) == 0 with input.request as req with data.magtape.pod_security as pss.setting("baseline", "latest")
}

test_details_name_the_volume if {
	found := [x | some x in denies(pss.pod({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}), "baseline", "v1.2")]
	count(found) == 1
	d := found[0]
	d.details == {"volume": "root", "field": "spec.volumes[0].hostPath", "level": "baseline", "version": "v1.2"}
	[d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]
}
