# MT1001 liveness-probe: every container of a long-running workload declares
# a livenessProbe. See README.md in this folder.
package kubernetes.admission.liveness_probe

import rego.v1

policy_metadata := {
	"name": "liveness-probe",
	"severity": "LOW",
	"errcode": "MT1001",
	"targets": data.magtape.lib.workloads.long_running_kinds,
}

# Jobs, CronJobs and Job-owned Pods run to completion: no probes needed.
# data.magtape.lib.workloads.long_running tests exactly policy_metadata.targets (and the
# owner), once per request for both probe checks.
matches if data.magtape.lib.workloads.long_running

# Names of the containers without a livenessProbe (or with a null one).
# Entries that are not objects are not containers and are skipped. The
# probe is read with object.get: `not container.livenessProbe != null`
# is undefined in OPA when the field is absent (docs/policies.md, "Writing
# engine-neutral Rego").
missing_probe := [object.get(container, "name", "") |
	some container in data.magtape.lib.workloads.containers
	is_object(container)
	object.get(container, "livenessProbe", null) == null
]

deny contains info if {
	matches
	some name in missing_probe

	# Built inline rather than with data.magtape.lib.messages.failure: this runs once per failing
	# container, and helper calls dominate its cost (docs/performance.md).
	info := {
		"name": "liveness-probe", "severity": "LOW", "errcode": "MT1001",
		"msg": concat("", ["[FAIL] LOW - Liveness Probe missing for container \"", data.magtape.lib.messages.str(name), "\" (MT1001)"]),
		"details": {"container": name},
	}
}
