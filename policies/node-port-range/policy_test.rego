package test.kubernetes.admission.node_port_range

import rego.v1

import data.kubernetes.admission.node_port_range as policy
import data.test.magtape.fixtures

node_port_service(type, node_ports) := fixtures.request("Service", {
	"apiVersion": "v1",
	"kind": "Service",
	"metadata": {"name": "test-svc", "namespace": "test1"},
	"spec": {"type": type, "selector": {"app": "test"}, "ports": ports(node_ports)},
})

ports(node_ports) := [port |
	some i
	node_port := node_ports[i]
	port := {"name": concat("", ["p", format_int(i, 10)]), "port": 8080 + i, "nodePort": node_port}
]

namespace_data(annotation) := {"test1": {"metadata": {"name": "test1", "annotations": {"k8s.t-mobile.com/nodeportRange": annotation}}}}

# denied(annotation, type, node_ports) is the set of messages for a Service
# with those node ports in namespace test1 annotated with `annotation`.
denied(annotation, type, node_ports) := msgs if {
	msgs := {d.msg | some d in policy.deny} with input.request as node_port_service(type, node_ports)
		with data.kubernetes.namespaces as namespace_data(annotation)
}

out_of_range(port) := concat("", ["[FAIL] MED - nodePort ", format_int(port, 10), " is out of defined range for Service \"test-svc\" (MT2002)"])

invalid := "[FAIL] MED - Invalid data in nodePort annotation in \"test1\" namespace (MT2002)"

test_violation_carries_metadata_and_details if {
	policy.deny == {{
		"name": "node-port-range",
		"severity": "MED",
		"errcode": "MT2002",
		"msg": out_of_range(30101),
		"details": {"nodePort": 30101, "allowed": "30100"},
	}} with input.request as node_port_service("NodePort", [30101])
		with data.kubernetes.namespaces as namespace_data("30100")
}

test_single_port if {
	denied("30100", "NodePort", [30100]) == set()
	denied("30100", "NodePort", [30101]) == {out_of_range(30101)}
}

test_list_of_ports if {
	denied("30100,30105", "NodePort", [30100, 30105]) == set()
	denied("30100,30105", "NodePort", [30100, 30103]) == {out_of_range(30103)}
}

test_range if {
	denied("30100-30200", "NodePort", [30100, 30150, 30200]) == set()
	denied("30100-30200", "NodePort", [30099, 30150, 30201]) == {out_of_range(30099), out_of_range(30201)}
}

test_ranges_and_ports_mixed if {
	denied("30100-30110,30300", "NodePort", [30105, 30300]) == set()
	denied("30100-30110,30300", "NodePort", [30200]) == {out_of_range(30200)}
}

test_spaces_are_ignored if {
	denied(" 30100 - 30110 , 30300 ", "NodePort", [30105, 30300]) == set()
	denied(" 30100 - 30110 , 30300 ", "NodePort", [30111]) == {out_of_range(30111)}
}

test_na_in_any_case_means_no_restriction if {
	every annotation in ["na", "NA", "Na", " na "] {
		denied(annotation, "NodePort", [30000, 32767]) == set()
	}
}

test_malformed_annotation_fails if {
	every annotation in ["abc", "30100-", "-30100", "30100,,30200", "30100-30200-30300", "30200-30100", "", "30100;30200"] {
		denied(annotation, "NodePort", [30100]) == {invalid}
	}
}

test_malformed_annotation_fails_before_ports_are_allocated if {
	denied("any", "NodePort", []) == {invalid}
}

test_load_balancer_is_checked if {
	denied("30100-30200", "LoadBalancer", [30150]) == set()
	denied("30100-30200", "LoadBalancer", [31000]) == {out_of_range(31000)}
}

test_unallocated_node_ports_pass if {
	req := fixtures.request("Service", {"metadata": {"name": "test-svc"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
	count(policy.deny) == 0 with input.request as req with data.kubernetes.namespaces as namespace_data("30100")
}

test_no_annotation_means_no_restriction if {
	count(policy.deny) == 0 with input.request as node_port_service("NodePort", [31000])
		with data.kubernetes.namespaces as {"test1": {"metadata": {"name": "test1", "annotations": {"other": "x"}}}}
	count(policy.deny) == 0 with input.request as node_port_service("NodePort", [31000])
		with data.kubernetes.namespaces as {"test1": {"metadata": {"name": "test1"}}}
}

test_unknown_namespace_means_no_restriction if {
	count(policy.deny) == 0 with input.request as node_port_service("NodePort", [31000])
		with data.kubernetes.namespaces as {"other": {"metadata": {"annotations": {"k8s.t-mobile.com/nodeportRange": "30100"}}}}
	count(policy.deny) == 0 with input.request as node_port_service("NodePort", [31000])
}

test_cluster_ip_services_are_ignored if {
	not policy.matches with input.request as node_port_service("ClusterIP", [31000])
	denied("30100", "ClusterIP", [31000]) == set()
	req := fixtures.request("Service", {"metadata": {"name": "test-svc"}, "spec": {"ports": [{"port": 80}]}})
	not policy.matches with input.request as req
}

test_other_kinds_are_ignored if {
	not policy.matches with input.request as fixtures.workload("Deployment", {"containers": [fixtures.good_container("app")]})
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every case in [["30100", [30101]], ["not-a-range", [30100]]] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as node_port_service("NodePort", case[1])
			with data.kubernetes.namespaces as namespace_data(case[0])
	}
}

test_bounds_with_leading_zeros_are_numbers if {
	# OPA's to_number refuses "030100"; the policy reads it as 30100.
	denied("030100-030200", "NodePort", [30150]) == set()
	denied("000-30200", "NodePort", [30150]) == set()
	denied("030100", "NodePort", [30101]) == {out_of_range(30101)}
}

test_bounds_longer_than_fifteen_digits_are_malformed if {
	denied("30000-1000000000000000", "NodePort", [30150]) == {invalid}
	denied("30000-000000000000000032767", "NodePort", [30150]) == set()
}

test_an_annotation_that_is_not_a_string_is_malformed if {
	# Only possible offline, from a data file (YAML `nodeportRange: 30100`).
	denied(30100, "NodePort", [30100]) == {invalid}
}

test_odd_node_ports if {
	denied("30100-30200", "NodePort", [30100.0, 0, "30500"]) == set()
	denied("30100-30200", "NodePort", [30300.5]) == {"[FAIL] MED - nodePort 30300.5 is out of defined range for Service \"test-svc\" (MT2002)"}
}
