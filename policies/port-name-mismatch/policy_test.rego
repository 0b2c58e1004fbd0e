package test.kubernetes.admission.port_name_mismatch

import rego.v1

import data.kubernetes.admission.port_name_mismatch as policy
import data.test.magtape.fixtures

service_with(ports) := fixtures.request("Service", {
	"apiVersion": "v1",
	"kind": "Service",
	"metadata": {"name": "test-svc", "namespace": "test1"},
	"spec": {"selector": {"app": "test"}, "ports": ports},
})

test_http_on_443_fails if {
	policy.deny == {{
		"name": "port-name-mismatch",
		"severity": "HIGH",
		"errcode": "MT1006",
		"msg": "[FAIL] HIGH - Logical port name \"http\" mismatch with port number \"443\" for service \"test-svc\" (MT1006)",
		"details": {"port": "http"},
	}} with input.request as service_with([{"name": "http", "port": 443, "targetPort": 8443}])
}

test_http_prefixed_name_on_443_fails if {
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Logical port name \"http-web\" mismatch with port number \"443\" for service \"test-svc\" (MT1006)"} with input.request as service_with([{"name": "http-web", "port": 443}])
}

test_every_mismatched_port_is_reported if {
	ports := [{"name": "http", "port": 443}, {"name": "http-alt", "port": 443}, {"name": "http-ok", "port": 80}]
	{d.msg | some d in policy.deny} == {
		"[FAIL] HIGH - Logical port name \"http\" mismatch with port number \"443\" for service \"test-svc\" (MT1006)",
		"[FAIL] HIGH - Logical port name \"http-alt\" mismatch with port number \"443\" for service \"test-svc\" (MT1006)",
	} with input.request as service_with(ports)
}

test_matching_names_pass if {
	ports := [
		{"name": "https", "port": 443},
		{"name": "https-web", "port": 443},
		{"name": "http", "port": 80},
		{"name": "http-web", "port": 8080},
		{"name": "httpx", "port": 443},
		{"name": "grpc", "port": 443},
		{"port": 443},
	]
	count(policy.deny) == 0 with input.request as service_with(ports)
}

test_service_without_ports_passes if {
	req := fixtures.request("Service", {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None"}})
	count(policy.deny) == 0 with input.request as req
}

test_other_kinds_are_ignored if {
	req := fixtures.workload("Pod", {"containers": [{"name": "http", "ports": [{"name": "http", "containerPort": 443}]}]})
	not policy.matches with input.request as req
	count(policy.deny) == 0 with input.request as req
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every req in [service_with([{"name": "http", "port": 443}])] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as req
	}
}
