package test.kubernetes.admission.pss_apparmor

import rego.v1

import data.kubernetes.admission.pss_apparmor as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_unconfined_fields_fail_at_every_version if {
	spec := {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}, "containers": [pss.container("app", {"appArmorProfile": {"type": "Unconfined"}})]}
	every version in pss.versions {
		msgs(pss.request("StatefulSet", {}, spec), "baseline", version) == {
			"[FAIL] HIGH - pod sets spec.template.spec.securityContext.appArmorProfile.type=Unconfined; baseline requires appArmorProfile.type RuntimeDefault or Localhost (annotations: runtime/default or localhost/<profile>) (MT3007)",
			"[FAIL] HIGH - container \"app\" sets securityContext.appArmorProfile.type=Unconfined; baseline requires appArmorProfile.type RuntimeDefault or Localhost (annotations: runtime/default or localhost/<profile>) (MT3007)",
		}
	}
}

test_annotations_other_than_the_default_or_localhost_fail if {
	annotations := {
		"container.apparmor.security.beta.kubernetes.io/a": "unconfined",
		"container.apparmor.security.beta.kubernetes.io/b": "runtime/default",
		"container.apparmor.security.beta.kubernetes.io/c": "localhost/custom",
		"container.apparmor.security.beta.kubernetes.io/d": "",
		"container.apparmor.security.beta.kubernetes.io/e": "docker/default",
		"other.example.com/x": "unconfined",
	}
	spec := {"containers": [pss.container("a", {})]}
	msgs(pss.request("Job", annotations, spec), "restricted", "v1.10") == {
		"[FAIL] HIGH - container \"a\" has AppArmor annotation container.apparmor.security.beta.kubernetes.io/a=\"unconfined\"; baseline requires appArmorProfile.type RuntimeDefault or Localhost (annotations: runtime/default or localhost/<profile>) (MT3007)",
		"[FAIL] HIGH - container \"e\" has AppArmor annotation container.apparmor.security.beta.kubernetes.io/e=\"docker/default\"; baseline requires appArmorProfile.type RuntimeDefault or Localhost (annotations: runtime/default or localhost/<profile>) (MT3007)",
	}
}

# An empty value in YAML (null) is stored as "" by the API server: the
# runtime's default profile, allowed.
test_an_empty_annotation_is_the_default if {
	annotations := {"container.apparmor.security.beta.kubernetes.io/a": null}
	spec := {"containers": [pss.container("a", {})]}
	every version in pss.versions {
		count(denies(pss.request("Pod", annotations, spec), "restricted", version)) == 0
	}
}

test_annotation_failure_names_container_and_image if {
	found := [x | some x in denies(pss.request("Pod", {"container.apparmor.security.beta.kubernetes.io/a": "unconfined"}, {"containers": [pss.container("a", {})]}), "baseline", "latest")]
	count(found) == 1
	d := found[0]
	d.details.container == "a"
	d.details.image == "registry.example.com/app:1.0"
	d.details.field == "metadata.annotations[container.apparmor.security.beta.kubernetes.io/a]"
	metadata_ok(d)
}

test_runtime_default_and_localhost_pass if {
	spec := {"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}, "containers": [pss.container("app", {"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}})]}
	count(denies(pss.pod(spec), "restricted", "latest")) == 0
}

test_one_failure_per_container_for_field_and_annotation if {
	spec := {"containers": [pss.container("app", {"appArmorProfile": {"type": "Unconfined"}})]}
	msgs(pss.request("Pod", {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}, spec), "baseline", "latest") == {"[FAIL] HIGH - container \"app\" sets securityContext.appArmorProfile.type=Unconfined and has AppArmor annotation container.apparmor.security.beta.kubernetes.io/app=\"unconfined\"; baseline requires appArmorProfile.type RuntimeDefault or Localhost (annotations: runtime/default or localhost/<profile>) (MT3007)"}
}
