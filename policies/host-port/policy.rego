# MT1008 host-port: no container (init and ephemeral ones included) binds a
# port on the node. See README.md in this folder.
package kubernetes.admission.host_port

import rego.v1

policy_metadata := {
	"name": "host-port",
	"severity": "HIGH",
	"errcode": "MT1008",
	"targets": data.magtape.lib.workloads.kinds,
}

# data.magtape.lib.workloads.is_workload tests exactly policy_metadata.targets, once per
# request for every pod check.
matches if data.magtape.lib.workloads.is_workload

# [name, host ports] of each container that binds ports on the node.
# Containers are gathered in a comprehension, never iterated in a rule body,
# keeping only what the messages need (docs/policies.md, "Rules of thumb").
host_port_users := [[object.get(container, "name", ""), host_ports] |
	some container in data.magtape.lib.workloads.all_containers
	is_array(container.ports) # else: no ports
	host_ports := [port.hostPort |
		some port in container.ports
		is_number(port.hostPort)
		port.hostPort != 0 # 0 is what the API server stores for "not set"
	]
	count(host_ports) > 0
]

deny contains info if {
	matches

	# Under a Pod Security Standards level MT3006 reports this field instead
	# (docs/pod-security.md, "Overlaps"): one failure per field, never two.
	not data.magtape.lib.pod_security.baseline_applies
	some [name, host_ports] in host_port_users
	text := concat("", ["hostPort is configured for container ", data.magtape.lib.messages.quoted(name)])
	info := data.magtape.lib.messages.failure("host-port", "HIGH", "MT1008", text, {"container": name, "hostPorts": host_ports})
}
