# Names of the object under review, as the messages should show them.
package magtape.lib.request

import rego.v1

# The object's name; generateName (e.g. "web-7d9f-") when the API server has
# not named it yet; else the request's name.
object_name := name if {
	name := input.request.object.metadata.name
	is_string(name)
	name != ""
} else := name if {
	name := input.request.object.metadata.generateName
	is_string(name)
	name != ""
} else := object.get(input.request, "name", "")

# The namespace the object is created in ("" when neither the request nor
# the object names one as a string).
namespace := ns if {
	ns := input.request.namespace
	is_string(ns)
	ns != ""
} else := ns if {
	ns := input.request.object.metadata.namespace
	is_string(ns)
} else := ""
