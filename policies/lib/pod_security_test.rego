package test.magtape.lib.pod_security

import rego.v1

import data.magtape.lib.pod_security as pss
import data.test.magtape.fixtures

pod := fixtures.workload("Pod", {"containers": [fixtures.bare_container("app")]})

namespaces(labels) := {"test1": {"metadata": {"name": "test1", "labels": labels}}}

level_and_version(setting, ns) := [l, v] if {
	l := pss.level with input.request as pod with data.magtape.pod_security as setting with data.kubernetes.namespaces as ns
	v := pss.version with input.request as pod with data.magtape.pod_security as setting with data.kubernetes.namespaces as ns
}

test_nothing_set_is_privileged_at_latest if {
	level_and_version({}, {}) == ["privileged", 37]
	not pss.baseline_applies with input.request as pod
}

test_the_override_wins_over_labels_and_default if {
	setting := {"override": {"level": "baseline", "version": "v1.22"}, "default": {"level": "restricted"}}
	level_and_version(setting, namespaces({pss.level_label: "privileged"})) == ["baseline", 22]
}

test_an_override_without_version_is_latest if {
	level_and_version({"override": {"level": "restricted"}}, namespaces({pss.version_label: "v1.2"})) == ["restricted", 37]
}

test_namespace_labels_win_over_the_default if {
	labels := {pss.level_label: "restricted", pss.version_label: "v1.24"}
	level_and_version({"default": {"level": "baseline", "version": "v1.30"}}, namespaces(labels)) == ["restricted", 24]
}

test_a_namespace_level_without_version_takes_the_default_version if {
	level_and_version({"default": {"level": "baseline", "version": "v1.30"}}, namespaces({pss.level_label: "restricted"})) == ["restricted", 30]
}

test_the_default_applies_to_unlabelled_namespaces if {
	level_and_version({"default": {"level": "baseline", "version": "latest"}}, namespaces({})) == ["baseline", 37]
	level_and_version({"default": {"level": "off", "version": "latest"}}, namespaces({})) == ["privileged", 37]
}

test_versions_newer_than_the_newest_rules_are_latest if {
	level_and_version({"override": {"level": "baseline", "version": "v1.40"}}, {}) == ["baseline", 37]
	level_and_version({"override": {"level": "baseline", "version": "LATEST"}}, {}) == ["baseline", 37]
	level_and_version({"override": {"level": "baseline", "version": "v1.0"}}, {}) == ["baseline", 0]
}

test_malformed_settings_are_read_strictly_and_reported if {
	setting := {"override": {"level": "Strict", "version": "1.25"}}
	level_and_version(setting, {}) == ["restricted", 37]
	problems := pss.problems with input.request as pod with data.magtape.pod_security as setting
	count(problems) == 2
	level_and_version({"override": {"level": "baseline", "version": "v0.9"}}, {}) == ["baseline", 37]
	level_and_version({"override": {"level": "baseline", "version": "v1.07"}}, {}) == ["baseline", 37]
}

test_well_formed_settings_report_no_problem if {
	problems := pss.problems with input.request as pod with data.magtape.pod_security as {"override": {"level": " Baseline ", "version": "v1.25"}}
	problems == set()
}

test_since_and_before if {
	pss.since(25) with input.request as pod with data.magtape.pod_security as {"override": {"level": "baseline", "version": "v1.25"}}
	pss.before(26) with input.request as pod with data.magtape.pod_security as {"override": {"level": "baseline", "version": "v1.25"}}
	not pss.since(26) with input.request as pod with data.magtape.pod_security as {"override": {"level": "baseline", "version": "v1.25"}}
}

test_containers_are_gathered_from_every_list_with_their_field_path if {
	spec := {
		"initContainers": [fixtures.bare_container("init")],
		"containers": [fixtures.bare_container("app"), {"name": "sc", "image": "x", "securityContext": {"privileged": true}}],
		"ephemeralContainers": [fixtures.bare_container("debug")],
	}
	found := pss.containers with input.request as fixtures.workload("CronJob", spec)
	prefix := "spec.jobTemplate.spec.template.spec."
	[[c.name, c.field] | some c in found] == [["init", concat("", [prefix, "initContainers[0]."])], ["app", concat("", [prefix, "containers[0]."])], ["sc", concat("", [prefix, "containers[1]."])], ["debug", concat("", [prefix, "ephemeralContainers[0]."])]]
	found[1].subject == "container \"app\""
	found[2].sc == {"privileged": true}
	found[0].sc == {}
}

test_spec_and_metadata_paths_follow_the_kind if {
	"spec" == pss.spec_path with input.request as fixtures.workload("Pod", {})
	"spec.template.spec" == pss.spec_path with input.request as fixtures.workload("Deployment", {})
	"spec.jobTemplate.spec.template.spec" == pss.spec_path with input.request as fixtures.workload("CronJob", {})
	"spec.template.metadata" == pss.metadata_path with input.request as fixtures.workload("Job", {})
}

test_message_values_stay_on_one_line_and_short if {
	pss.text("a\nb\tc") == "a b c"
	pss.text("a\u2028b\u007f") == "a b "
	pss.text("zoë <a>") == "zoë <a>"
	pss.text(8080) == "8080"
	pss.text(0.5) == "(a number)"
	count(pss.text(concat("", [x | some _ in numbers.range(1, 200); x := "x"]))) == 120
}
