package test.magtape.lib.workloads

import rego.v1

import data.magtape.lib.workloads
import data.test.magtape.fixtures

spec := {
	"initContainers": [fixtures.bare_container("init")],
	"containers": [fixtures.bare_container("app"), fixtures.bare_container("sidecar")],
	"ephemeralContainers": [fixtures.bare_container("debug")],
	"volumes": [{"name": "data", "emptyDir": {}}],
}

test_pod_spec_found_for_every_workload_kind if {
	# (The value is compared outside the `with`: regorus 0.13 makes
	# `rule == other_rule with input... as ...` undefined.)
	every kind in workloads.kinds {
		found := workloads.pod_spec with input.request as fixtures.workload(kind, spec)
		found == spec
	}
}

test_cronjob_pod_spec_is_under_the_job_template if {
	workloads.pod_spec_of("CronJob", {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}) == spec
}

test_no_pod_spec_for_other_kinds if {
	not workloads.pod_spec with input.request as fixtures.request("Service", {"metadata": {"name": "svc"}, "spec": {"ports": []}})
}

test_containers_are_the_app_containers_only if {
	names := [c.name | some c in workloads.containers] with input.request as fixtures.workload("Deployment", spec)
	names == ["app", "sidecar"]
}

test_all_containers_include_init_and_ephemeral if {
	names := [c.name | some c in workloads.all_containers] with input.request as fixtures.workload("Pod", spec)
	names == ["app", "sidecar", "init", "debug"]
}

test_missing_or_null_lists_are_empty if {
	workloads.all_containers == [] with input.request as fixtures.workload("Pod", {"containers": null})
	workloads.volumes == [] with input.request as fixtures.workload("Pod", {"containers": []})
}

test_volumes if {
	workloads.volumes == [{"name": "data", "emptyDir": {}}] with input.request as fixtures.workload("StatefulSet", spec)
}

test_run_to_completion_kinds_are_not_long_running if {
	every kind in {"Job", "CronJob"} {
		not workloads.long_running with input.request as fixtures.workload(kind, spec)
	}
}

test_other_workloads_are_long_running if {
	every kind in workloads.kinds - {"Job", "CronJob"} {
		workloads.long_running with input.request as fixtures.workload(kind, spec)
	}
}

test_job_owned_pod_is_not_long_running if {
	req := fixtures.pod({"name": "job-x-abcde", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "job-x", "controller": true}]}, spec)
	workloads.job_owned_pod with input.request as req
	not workloads.long_running with input.request as req
}

test_replicaset_owned_pod_is_long_running if {
	req := fixtures.pod({"name": "web-abcde", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "controller": true}]}, spec)
	not workloads.job_owned_pod with input.request as req
	workloads.long_running with input.request as req
}

test_owner_references_default_to_empty if {
	workloads.owner_references == [] with input.request as fixtures.pod({"name": "single"}, spec)
}

test_present if {
	workloads.present({"a": 1}, "a")
	workloads.present({"a": {}}, "a")
	not workloads.present({"a": null}, "a")
	not workloads.present({}, "a")
}

test_kind_sets if {
	workloads.kinds == {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController", "CronJob"}
	workloads.template_kinds == {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
	workloads.long_running_kinds == {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"}
}

test_is_workload_for_every_workload_kind_only if {
	every kind in workloads.kinds {
		workloads.is_workload with input.request as fixtures.workload(kind, spec)
	}
	not workloads.is_workload with input.request as fixtures.request("Service", {"metadata": {"name": "svc"}, "spec": {"ports": []}})
}

test_pod_spec_of_every_workload_kind if {
	every kind in workloads.kinds {
		workloads.pod_spec_of(kind, fixtures.workload_object(kind, spec)) == spec
	}
	not workloads.pod_spec_of("Service", {"spec": spec})
}

test_no_lists_for_other_kinds if {
	req := fixtures.request("Service", {"metadata": {"name": "svc"}, "spec": {"containers": [], "volumes": []}})
	not workloads.containers with input.request as req
	not workloads.all_containers with input.request as req
	not workloads.volumes with input.request as req
}

test_no_pod_spec_lists_are_empty if {
	# A workload without a pod template has no containers, but is still checked.
	workloads.containers == [] with input.request as fixtures.request("Deployment", {"metadata": {"name": "d"}, "spec": {"template": {"spec": {}}}})
	workloads.volumes == [] with input.request as fixtures.request("Deployment", {"metadata": {"name": "d"}, "spec": {"template": {"spec": null}}})
}

test_all_containers_with_empty_init_and_ephemeral_lists if {
	s := {"containers": [fixtures.bare_container("app")], "initContainers": [], "ephemeralContainers": null}
	[c.name | some c in workloads.all_containers] == ["app"] with input.request as fixtures.workload("Pod", s)
}

test_get if {
	workloads.get({"a": 1}, "a", 0) == 1
	workloads.get({}, "a", 0) == 0
	workloads.get("text", "a", 0) == 0
	workloads.get(null, "a", 0) == 0
}

test_present_on_other_types if {
	not workloads.present("text", "a")
	not workloads.present([1], "a")
	not workloads.present(5, "a")
}
