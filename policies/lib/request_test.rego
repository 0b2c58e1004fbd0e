package test.magtape.lib.request

import rego.v1

import data.magtape.lib.request

test_object_name if {
	request.object_name == "web" with input.request as {"name": "", "object": {"metadata": {"name": "web"}}}
}

test_object_name_falls_back_to_generate_name if {
	request.object_name == "web-" with input.request as {"object": {"metadata": {"name": "", "generateName": "web-"}}}
}

test_object_name_falls_back_to_request_name if {
	request.object_name == "from-request" with input.request as {"name": "from-request", "object": {"metadata": {}}}
}

test_namespace_from_request if {
	request.namespace == "test1" with input.request as {"namespace": "test1", "object": {"metadata": {"namespace": "other"}}}
}

test_namespace_from_object if {
	request.namespace == "test2" with input.request as {"object": {"metadata": {"namespace": "test2"}}}
}

test_namespace_empty_when_unknown if {
	request.namespace == "" with input.request as {"object": {"metadata": {}}}
}

test_empty_request_namespace_falls_back_to_the_object if {
	request.namespace == "test2" with input.request as {"namespace": "", "object": {"metadata": {"namespace": "test2"}}}
}

test_odd_metadata_gives_an_empty_namespace if {
	request.namespace == "" with input.request as {"object": {"metadata": "not an object"}}
	request.namespace == "" with input.request as {"object": {"metadata": {"namespace": 5}}}
}
