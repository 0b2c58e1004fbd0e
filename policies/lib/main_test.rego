package test.magtape.main

import rego.v1

import data.magtape.main

fixture_request(fail) := {
	"uid": "1",
	"kind": {"kind": "MagTapeFixture"},
	"object": {"metadata": {"name": "x"}, "spec": {"fail": fail}},
}

fixture_metadata := {"name": "magtape-main-fixture", "severity": "LOW", "errcode": "MT0000", "targets": {"MagTapeFixture"}}

test_decisions_gather_matching_policies if {
	main.decisions == {"magtape_main_fixture": {
		"metadata": fixture_metadata,
		"deny": {{"name": "magtape-main-fixture", "severity": "LOW", "errcode": "MT0000", "msg": "[FAIL] LOW - fixture (MT0000)"}},
	}} with input.request as fixture_request(true)
}

test_decisions_include_passing_policies_with_an_empty_deny if {
	main.decisions == {"magtape_main_fixture": {"metadata": fixture_metadata, "deny": set()}} with input.request as fixture_request(false)
}

test_decisions_leave_out_policies_that_do_not_match if {
	d := main.decisions with input.request as {"uid": "1", "kind": {"kind": "NoSuchKind"}, "object": {"metadata": {"name": "x"}}}
	not d.magtape_main_fixture
}

test_decisions_need_the_kind_in_the_targets if {
	# matches alone is not enough: the kind must also be a target.
	d := main.decisions with input.request as fixture_request(true)
		with data.kubernetes.admission.magtape_main_fixture.policy_metadata as object.union(fixture_metadata, {"targets": {"Pod"}})
		with data.kubernetes.admission.magtape_main_fixture.matches as true
	not d.magtape_main_fixture
}

test_decisions_need_matches if {
	# The kind is a target, but matches is undefined: the policy does not apply.
	d := main.decisions with input.request as fixture_request(true)
		with data.kubernetes.admission.magtape_main_fixture.matches as false
	not d.magtape_main_fixture
}
