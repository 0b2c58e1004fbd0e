package test.kubernetes.admission.pss_volume_types

import rego.v1

import data.kubernetes.admission.pss_volume_types as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_non_core_volume_types_fail if {
	spec := {"volumes": [
		{"name": "nfs", "nfs": {"server": "s", "path": "/"}},
		{"name": "host", "hostPath": {"path": "/"}},
		{"name": "git", "gitRepo": {"repository": "r"}},
		{"name": "ok", "emptyDir": {}},
	]}
	every version in pss.versions {
		msgs(pss.request("ReplicaSet", {}, spec), "restricted", version) == {
			"[FAIL] HIGH - volume \"nfs\" uses volume type nfs; restricted requires one of configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected, secret (MT3013)",
			"[FAIL] HIGH - volume \"host\" uses volume type hostPath; restricted requires one of configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected, secret (MT3013)",
			"[FAIL] HIGH - volume \"git\" uses volume type gitRepo; restricted requires one of configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected, secret (MT3013)",
		}
	}
}

test_allowed_types_pass if {
	spec := {"volumes": [
		{"name": "a", "configMap": {"name": "c"}},
		{"name": "b", "csi": {"driver": "d"}},
		{"name": "c", "downwardAPI": {}},
		{"name": "d", "emptyDir": {}},
		{"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
		{"name": "f", "image": {"reference": "r"}},
		{"name": "g", "persistentVolumeClaim": {"claimName": "c"}},
		{"name": "h", "projected": {"sources": []}},
		{"name": "i", "secret": {"secretName": "s"}},
	]}
	count(denies(pss.pod(spec), "restricted", "v1.0")) == 0
}

test_baseline_does_not_check_it if {
	count(denies(pss.pod({"volumes": [{"name": "nfs", "nfs": {"server": "s", "path": "/"}}]}), "baseline", "latest")) == 0
}

# The API server defaults a volume that sets no source to an emptyDir.
test_a_volume_without_a_type_is_an_empty_dir if {
	msgs(pss.pod({"volumes": [{"name": "x"}]}), "restricted", "latest") == set()
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"volumes": [{"name": "x", "rbd": {}}]}), "restricted", "latest")
	metadata_ok(d)
	d.details.volume == "x"
}
