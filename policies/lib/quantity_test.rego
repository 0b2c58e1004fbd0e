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
