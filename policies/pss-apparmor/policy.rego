# MT3007 pss-apparmor: Pod Security Standards, baseline, v1.0+ - AppArmor is
# not switched off or replaced by an unknown profile: the
# securityContext.appArmorProfile fields (pod and containers) and the beta
# annotations container.apparmor.security.beta.kubernetes.io/<container>.
# See README.md in this folder.
package kubernetes.admission.pss_apparmor

import rego.v1

policy_metadata := {
	"name": "pss-apparmor",
	"severity": "HIGH",
	"errcode": "MT3007",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
}

allowed_types := {"RuntimeDefault", "Localhost"}

annotation_prefix := "container.apparmor.security.beta.kubernetes.io/"

bad_type(profile) if {
	is_object(profile)
	not object.get(profile, "type", "") in allowed_types
}

bad_containers := [c |
	some c in data.magtape.lib.pod_security.containers
	bad_type(object.get(c.sc, "appArmorProfile", null))
]

# [annotation key, value] of each annotation naming a profile other than
# runtime/default, localhost/<profile> or "" (the default).
bad_annotations := [[key, value] |
	some key, value in data.magtape.lib.pod_security.annotations
	is_string(key)
	startswith(key, annotation_prefix)
	not allowed_annotation(value)
]

allowed_annotation(value) if value == ""

allowed_annotation(value) if value == "runtime/default"

allowed_annotation(value) if {
	is_string(value)
	startswith(value, "localhost/")
}

allowed_text := "appArmorProfile.type RuntimeDefault or Localhost (annotations: runtime/default or localhost/<profile>)"

deny contains info if {
	matches
	profile := data.magtape.lib.pod_security.pod_security_context.appArmorProfile
	bad_type(profile)
	info := data.magtape.lib.pod_security.pod_failure(
		"pss-apparmor", "MT3007", "baseline", "securityContext.appArmorProfile.type",
		concat("", ["securityContext.appArmorProfile.type=", data.magtape.lib.pod_security.text(object.get(profile, "type", ""))]),
		allowed_text,
	)
}

# One failure per container: a container whose field is wrong has its
# annotation (if that is wrong too) named in the same failure.
deny contains info if {
	matches
	some c in bad_containers
	field_text := concat("", ["sets securityContext.appArmorProfile.type=", data.magtape.lib.pod_security.text(object.get(c.sc.appArmorProfile, "type", ""))])
	info := data.magtape.lib.pod_security.container_failure(
		"pss-apparmor", "MT3007", "baseline", c, "securityContext.appArmorProfile.type",
		concat("", [field_text, annotation_problem(c.name)]),
		allowed_text,
	)
}

bad_field_names := {c.name | some c in bad_containers}

# " and has AppArmor annotation <key>=<value>" when the container's annotation
# is not allowed, else "".
annotation_problem(name) := concat("", [" and has AppArmor annotation ", data.magtape.lib.pod_security.text(key), "=", data.magtape.lib.pod_security.quoted(value)]) if {
	key := concat("", [annotation_prefix, name])
	value := object.get(data.magtape.lib.pod_security.annotations, key, null)
	value != null
	not allowed_annotation(value)
} else := ""

deny contains info if {
	matches
	some [key, value] in bad_annotations
	container := substring(key, count(annotation_prefix), -1)
	not container in bad_field_names
	info := data.magtape.lib.pod_security.failure(
		"pss-apparmor", "MT3007", "baseline",
		concat("", ["container ", data.magtape.lib.pod_security.quoted(container)]),
		concat("", ["has AppArmor annotation ", data.magtape.lib.pod_security.text(key), "=", data.magtape.lib.pod_security.quoted(value)]),
		allowed_text,
		{
			"container": container,
			"image": data.magtape.lib.pod_security.image_of(container),
			"field": concat("", [data.magtape.lib.pod_security.metadata_path, ".annotations[", key, "]"]),
		},
	)
}
