# MT1006 port-name-mismatch: a Service port named "http" or "http-*" does not
# use port 443. Istio takes the protocol from the port name, so such a port
# would be treated as plain HTTP while clients speak TLS. See README.md.
package kubernetes.admission.port_name_mismatch

import rego.v1

policy_metadata := {
	"name": "port-name-mismatch",
	"severity": "HIGH",
	"errcode": "MT1006",
	"targets": {"Service"},
}

# policy_metadata.targets, tested with == rather than `in`, which would
# build the targets set on every request.
matches if input.request.kind.kind == "Service"

deny contains info if {
	matches
	some port in data.magtape.lib.workloads.list(object.get(input.request.object, "spec", {}), "ports")
	port.port == 443
	http_name(port.name)
	text := concat("", [
		"Logical port name ", data.magtape.lib.messages.quoted(port.name),
		" mismatch with port number \"443\" for service ", data.magtape.lib.messages.quoted(data.magtape.lib.request.object_name),
	])
	info := data.magtape.lib.messages.failure("port-name-mismatch", "HIGH", "MT1006", text, {"port": port.name})
}

http_name(name) if name == "http"

# (is_string first: startswith on a number is undefined in OPA, an error in
# regorus.)
http_name(name) if {
	is_string(name)
	startswith(name, "http-")
}
