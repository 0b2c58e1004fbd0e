package test.kubernetes.admission.pdb

import rego.v1

import data.kubernetes.admission.pdb as policy
import data.test.magtape.fixtures

pdb(spec) := fixtures.request("PodDisruptionBudget", {
	"apiVersion": "policy/v1",
	"kind": "PodDisruptionBudget",
	"metadata": {"name": "test-pdb", "namespace": "test1"},
	"spec": object.union({"selector": {"matchLabels": {"app": "test"}}}, spec),
})

test_integer_min_available_fails if {
	policy.deny == {{
		"name": "pdb",
		"severity": "HIGH",
		"errcode": "MT1005",
		"msg": "[FAIL] HIGH - Value \"2\" for \"minAvailable\" should be a Percentage, not an Integer (MT1005)",
		"details": {"field": "minAvailable", "value": 2},
	}} with input.request as pdb({"minAvailable": 2})
}

test_integer_max_unavailable_fails if {
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Value \"1\" for \"maxUnavailable\" should be a Percentage, not an Integer (MT1005)"} with input.request as pdb({"maxUnavailable": 1})
}

test_integer_written_as_a_string_fails if {
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Value \"3\" for \"minAvailable\" should be a Percentage, not an Integer (MT1005)"} with input.request as pdb({"minAvailable": "3"})
}

test_zero_is_an_integer_too if {
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Value \"0\" for \"maxUnavailable\" should be a Percentage, not an Integer (MT1005)"} with input.request as pdb({"maxUnavailable": 0})
}

test_min_available_within_range_passes if {
	every value in ["0%", "50%", "66%"] {
		count(policy.deny) == 0 with input.request as pdb({"minAvailable": value})
	}
}

test_min_available_above_range_fails if {
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Value (67%) for \"minAvailable\" not within range 0%-66% (MT1005)"} with input.request as pdb({"minAvailable": "67%"})
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Value (100%) for \"minAvailable\" not within range 0%-66% (MT1005)"} with input.request as pdb({"minAvailable": "100%"})
}

test_max_unavailable_within_range_passes if {
	every value in ["33%", "50%", "100%"] {
		count(policy.deny) == 0 with input.request as pdb({"maxUnavailable": value})
	}
}

test_max_unavailable_below_range_fails if {
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Value (32%) for \"maxUnavailable\" not within range 33%-100% (MT1005)"} with input.request as pdb({"maxUnavailable": "32%"})
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Value (0%) for \"maxUnavailable\" not within range 33%-100% (MT1005)"} with input.request as pdb({"maxUnavailable": "0%"})
}

test_both_fields_are_checked if {
	{d.msg | some d in policy.deny} == {
		"[FAIL] HIGH - Value \"1\" for \"minAvailable\" should be a Percentage, not an Integer (MT1005)",
		"[FAIL] HIGH - Value (10%) for \"maxUnavailable\" not within range 33%-100% (MT1005)",
	} with input.request as pdb({"minAvailable": 1, "maxUnavailable": "10%"})
}

test_pdb_without_either_field_passes if {
	count(policy.deny) == 0 with input.request as pdb({})
}

test_other_kinds_are_ignored if {
	req := fixtures.workload("Deployment", {"containers": [fixtures.bare_container("app")]})
	not policy.matches with input.request as req
	count(policy.deny) == 0 with input.request as req
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every req in [pdb({"minAvailable": 2}), pdb({"minAvailable": "80%"})] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as req
	}
}

msgs(spec) := result if {
	result := {d.msg | some d in policy.deny} with input.request as pdb(spec)
}

test_leading_zeros_and_fractions_are_read_as_numbers if {
	every value in ["050%", "0%", "000%", "66.0%", "65.99%", "0.5%"] {
		msgs({"minAvailable": value}) == set()
	}
	msgs({"minAvailable": "066.0000000000000001%"}) == {"[FAIL] HIGH - Value (066.0000000000000001%) for \"minAvailable\" not within range 0%-66% (MT1005)"}
	msgs({"maxUnavailable": "32.99999999999999999%"}) == {"[FAIL] HIGH - Value (32.99999999999999999%) for \"maxUnavailable\" not within range 33%-100% (MT1005)"}
	msgs({"maxUnavailable": "0100.00%"}) == set()
	msgs({"maxUnavailable": "1000%"}) == {"[FAIL] HIGH - Value (1000%) for \"maxUnavailable\" not within range 33%-100% (MT1005)"}
}

test_numbers_are_integers_whatever_their_spelling if {
	msgs({"minAvailable": 100.0}) == {"[FAIL] HIGH - Value \"100\" for \"minAvailable\" should be a Percentage, not an Integer (MT1005)"}
	msgs({"minAvailable": "007"}) == {"[FAIL] HIGH - Value \"007\" for \"minAvailable\" should be a Percentage, not an Integer (MT1005)"}
}

test_other_values_are_left_to_the_api_server if {
	every value in ["abc", "50 %", "%", ".5%", null, true, [1], {"a": 1}] {
		msgs({"minAvailable": value}) == set()
	}
}

test_a_very_long_value_is_answered if {
	value := concat("", [concat("", [x | some _ in numbers.range(1, 29998); x := "0"]), "50%"])
	msgs({"minAvailable": value}) == set()
}
