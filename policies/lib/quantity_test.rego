package test.magtape.lib.quantity

import rego.v1

import data.magtape.lib.quantity

test_binary_suffixes if {
	quantity.value("64Mi") == 67108864
	quantity.value("1Gi") == 1073741824
	quantity.value("1Ki") == 1024
}

test_decimal_suffixes if {
	quantity.value("100M") == 100000000
	quantity.value("50M") == 50000000
	quantity.value("1k") == 1000
	quantity.value("1G") == 1000000000
}

test_milli_is_not_mega if {
	quantity.value("100m") < 1
}

test_plain_numbers if {
	quantity.value("1024") == 1024
	quantity.value(1024) == 1024
	quantity.value("1e3") == 1000
}

test_invalid_is_undefined if {
	not quantity.value("lots")
	not quantity.value(null)
	not quantity.value({})
}

test_kubernetes_spellings if {
	quantity.value("5.") == 5
	quantity.value("5.M") == 5000000
	quantity.value(".5M") == 500000
	quantity.value("050M") == 50000000
	quantity.value("+1Ki") == 1024
	quantity.value("5e3") == 5000
	quantity.value("5.e3") == 5000
	quantity.value("1Ei") == 1152921504606846976
	quantity.value("5n") < 0.000001
	quantity.value("5u") < 0.0001
}

test_what_kubernetes_rejects_is_undefined if {
	# Spellings units.parse would read but the API server rejects, or that
	# OPA and regorus read differently: undefined here, in every engine.
	every q in ["5e", "5mi", "5MI", "1e3M", "5Mb", " 5M", "5 M", ".", "-", "", "0x10", "5Kib"] {
		not quantity.value(q)
	}
	not quantity.value(true)
	not quantity.value([1])
}
