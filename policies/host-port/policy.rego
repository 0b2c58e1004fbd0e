# MT1008 host-port: no container (init and ephemeral ones included) binds a
# port on the node. See README.md in this folder.
package kubernetes.admission.host_port

import rego.v1

import data.magtape.lib.messages
import data.magtape.lib.workloads

policy_metadata := {
	"name": "host-port",
	"severity": "HIGH",
	"errcode": "MT1008",
	"targets": workloads.kinds,
}

# workloads.is_workload tests exactly policy_metadata.targets, once per
# request for every pod check.
matches if workloads.is_workload

deny contains info if {
	matches
	some container in workloads.all_containers
	host_ports := [port.hostPort |
		some port in workloads.list(container, "ports")
		is_number(port.hostPort)
		port.hostPort != 0 # 0 is what the API server stores for "not set"
	]
	count(host_ports) > 0
	name := object.get(container, "name", "")
	text := concat("", ["hostPort is configured for container ", messages.quoted(name)])
	info := messages.failure("host-port", "HIGH", "MT1008", text, {"container": name, "hostPorts": host_ports})
}
