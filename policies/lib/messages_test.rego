package test.magtape.lib.messages

import rego.v1

import data.magtape.lib.messages

meta := {"name": "example", "severity": "MED", "errcode": "MT9999", "targets": {"Pod"}}

test_fail_message_shape if {
	messages.fail_message("LOW", "something is wrong", "MT0001") == "[FAIL] LOW - something is wrong (MT0001)"
}

test_violation if {
	messages.violation(meta, "text") == {
		"name": "example",
		"severity": "MED",
		"errcode": "MT9999",
		"msg": "[FAIL] MED - text (MT9999)",
	}
}

test_violation_with_details if {
	v := messages.violation_with_details(meta, "text", {"container": "app"})
	v.details == {"container": "app"}
	v.msg == "[FAIL] MED - text (MT9999)"
}

test_str if {
	messages.str("web") == "web"
	messages.str(30100) == "30100"
	messages.str(1.5) == "1.5"
	messages.str(null) == "null"
}

test_quoted if {
	messages.quoted("web") == "\"web\""
	messages.quoted(443) == "\"443\""
}

test_literal_strings_are_not_quoted_twice if {
	# Names are quoted once, whatever the engine (rego-cpp's sprintf quoted them twice).
	name := "web"
	messages.fail_message("HIGH", concat("", ["container ", messages.quoted(name)]), "MT0002") == "[FAIL] HIGH - container \"web\" (MT0002)"
}

test_failure if {
	messages.failure("example", "MED", "MT9999", "text", {"container": "app"}) == {
		"name": "example",
		"severity": "MED",
		"errcode": "MT9999",
		"msg": "[FAIL] MED - text (MT9999)",
		"details": {"container": "app"},
	}
}

test_failure_equals_violation_with_details if {
	messages.failure(meta.name, meta.severity, meta.errcode, "text", {"a": 1}) == messages.violation_with_details(meta, "text", {"a": 1})
}

test_quoted_prints_any_value_as_str_does if {
	every x in ["web", 30100, 1.5, null, true] {
		messages.quoted(x) == concat("", ["\"", messages.str(x), "\""])
	}
}

test_numbers_print_alike_in_every_engine if {
	messages.str(100.0) == "100"
	messages.str(-0) == "0"
	messages.str(-5) == "-5"
	messages.str(1234567.5) == "1234567.5"
	messages.str(30100.25) == "30100.25"
	messages.str(-1.5) == "-1.5"
	messages.str(0.1) == "0.1"
	messages.str(2.0000001) == "2"
	messages.str(-0.0000001) == "0"
	messages.str(0.0000005000001) == "0.000001"
	messages.str(999999999999999) == "999999999999999"
	messages.str(1000000000000000) == "(a number too large to show)"
	messages.str(1234567890.5) == "(a number too large to show)"
}
