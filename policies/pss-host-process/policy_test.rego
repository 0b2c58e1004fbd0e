package test.kubernetes.admission.pss_host_process

import rego.v1

import data.kubernetes.admission.pss_host_process as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

test_host_process_pod_and_container_fail if {
	spec := {"securityContext": {"windowsOptions": {"hostProcess": true}}, "hostNetwork": true, "containers": [pss.container("app", {"windowsOptions": {"hostProcess": true}})]}
	msgs(pss.request("Deployment", {}, spec), "baseline", "v1.0") == {
		"[FAIL] HIGH - pod sets spec.template.spec.securityContext.windowsOptions.hostProcess=true; baseline requires false or unset (MT3001)",
		"[FAIL] HIGH - container \"app\" sets securityContext.windowsOptions.hostProcess=true; baseline requires false or unset (MT3001)",
	}
}

test_fails_in_every_kind_level_and_version if {
	spec := {"containers": [pss.container("app", {"windowsOptions": {"hostProcess": true}})]}
	every kind in pss.kinds {
		count(denies(pss.request(kind, {}, spec), "baseline", "latest")) == 1
	}
	every version in pss.versions {
		count(denies(pss.pod(spec), "baseline", version)) == 1
		count(denies(pss.pod(spec), "restricted", version)) == 1
	}
}

test_false_or_unset_passes if {
	spec := {"securityContext": {"windowsOptions": {"hostProcess": false}}, "containers": [pss.container("app", {"windowsOptions": {"runAsUserName": "x"}}), pss.container("b", {})]}
	count(denies(pss.pod(spec), "restricted", "latest")) == 0
}

test_privileged_level_and_no_level_allow_it if {
	spec := {"containers": [pss.container("app", {"windowsOptions": {"hostProcess": true}})]}
	count(denies(pss.pod(spec), "privileged", "latest")) == 0
	found := policy.deny with input.request as pss.pod(spec)
	count(found) == 0
}

test_details_name_container_image_field_and_level if {
	spec := {"containers": [pss.container("app", {"windowsOptions": {"hostProcess": true}})]}
	found := [x | some x in denies(pss.pod(spec), "baseline", "v1.30")]
	count(found) == 1
	d := found[0]
	d.details == {"container": "app", "image": "registry.example.com/app:1.0", "field": "spec.containers[0].securityContext.windowsOptions.hostProcess", "level": "baseline", "version": "v1.30"}
	{"name": d.name, "severity": d.severity, "errcode": d.errcode} == {"name": policy.policy_metadata.name, "severity": policy.policy_metadata.severity, "errcode": policy.policy_metadata.errcode}
}
