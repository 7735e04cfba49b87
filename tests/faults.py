"""The fault campaign: every fault and bad-input case of issues 21 (reliability, security) and 14 (real inputs),
each a test of the suite, listed here by node id prefix -> (case, issue). conftest.py marks them ``fault``, so

    FLASHSIM_FAULTS_REPORT=reports/faults.json python -m pytest -m fault      # scripts/fault-campaign.sh

runs exactly the campaign and writes the summary: cases tried and passed, and for each what it left behind
(temporary ``.*.tmp`` files in its scratch folder) and whether a planted secret was found. CI runs the whole suite
with FLASHSIM_FAULTS_REPORT set, so the JSON comes from the same run. A new case is one line here.
"""

from __future__ import annotations

CASES: dict[str, tuple[str, int]] = {
    # issue 21: secrets and provenance
    "tests/test_reliability.py::test_git_state_lists_untracked_files_and_caps_the_patch":
        ("untracked .env and large files: listed by name/size/sha256, patch capped", 21),
    "tests/test_reliability.py::test_planted_secrets_reach_no_store_log_or_record":
        ("secret in .env and credentials in MLFLOW_TRACKING_URI: found nowhere", 21),
    "tests/test_mlflow_team.py::test_job_with_credentials_logs_and_registers":
        ("job with credentials on the authenticated server: logs, registers, leaks nothing", 21),
    "tests/test_mlflow_team.py::test_anonymous_and_wrong_password_are_refused":
        ("anonymous client and wrong password refused", 21),
    "tests/test_mlflow_team.py::test_user_without_permission_cannot_write":
        ("user without permission cannot write", 21),
    # issue 21: kills, locks, stale runs
    "tests/test_reliability.py::test_sigterm_and_sigint_remove_temporaries_and_end_run_killed":
        ("SIGTERM/SIGINT during an atomic write: no temporaries, run KILLED", 21),
    "tests/test_reliability.py::test_sigkill_debris_is_cleaned_by_the_rerun":
        ("SIGKILL: the rerun removes temporaries and fails the stale RUNNING run", 21),
    "tests/test_reliability.py::test_second_trainer_refuses_while_the_folder_is_held":
        ("second trainer on a held output folder refuses", 21),
    # issue 21: configuration and retries
    "tests/test_config_fail_fast.py::test_check_config_names_the_key": ("bad params.yaml names the key", 21),
    "tests/test_config_fail_fast.py::test_dry_run_fails_at_once_with_the_cli_message":
        ("snakemake -n fails at once with the CLI's message", 21),
    "tests/test_retries.py::test_workflow_resubmits_but_never_redoes_a_deterministic_failure":
        ("exit 2 not redone by retries, SIGKILL retried", 21),
    "tests/test_profiles.py::test_dry_run_with_gpu_profile_shows_gpus_on_gpu_rules_only":
        ("dry run independent of the checkout's outputs", 21),
    # issue 21: MLflow under faults and concurrency
    "tests/test_mlops_runs.py::test_unreachable_server_falls_back_to_local_store": ("unreachable MLflow server", 21),
    "tests/test_mlops_runs.py::test_server_lost_during_job_replays_into_local_store":
        ("MLflow server lost during the job", 21),
    "tests/test_mlflow_team.py::test_eight_jobs_share_one_experiment_and_model":
        ("8 concurrent jobs, one experiment, one model, 4 server workers", 21),
    "tests/test_reliability.py::test_nonfinite_metrics_are_flagged": ("NaN/inf metrics flagged, not dropped", 21),
    # issue 14: bad input (the cases that exist today; add the new ones here as they land)
    "tests/test_prepare.py::test_bad_data_is_refused": ("bad data refused (NaN, types, ranges)", 14),
    "tests/test_prepare.py::test_empty_tree": ("empty tree", 14),
    "tests/test_prepare.py::test_missing_tree": ("missing tree", 14),
    "tests/test_prepare.py::test_corrupt_basket": ("corrupted basket", 14),
    "tests/test_prepare.py::test_not_a_root_file": ("not a ROOT file", 14),
    "tests/test_prepare.py::test_truncated_file": ("truncated file", 14),
    "tests/test_prepare.py::test_missing_file_and_empty_glob": ("missing file, empty glob", 14),
    "tests/test_prepare.py::test_failure_keeps_previous_outputs_intact": ("failure keeps previous outputs", 14),
    "tests/test_prepare.py::test_mapping_of_unknown_contract_branch_is_a_config_error":
        ("mapping of an unknown branch", 14),
    "tests/test_ntuple_conventions.py::test_sentinels_become_nan_and_are_counted":
        ("LHCb sentinels -> NaN, counted", 14),
    "tests/test_ntuple_conventions.py::test_sentinel_in_a_branch_without_sentinels_is_refused":
        ("sentinel in a branch that defines none", 14),
    "tests/test_ntuple_conventions.py::test_sentinels_of_an_integer_branch_are_a_config_error":
        ("sentinels configured on an integer branch", 14),
    "tests/test_ntuple_conventions.py::test_out_of_range_values_are_refused_with_the_range_and_count":
        ("out-of-range values", 14),
    "tests/test_ntuple_conventions.py::test_out_of_range_weights_are_refused": ("out-of-range sWeights", 14),
    "tests/test_ntuple_conventions.py::test_random_bytes_in_an_uncompressed_file_are_refused":
        ("4 KiB of random bytes in an uncompressed file", 14),
    "tests/test_ntuple_conventions.py::test_rntuple_missing_field_and_wrong_type":
        ("RNTuple: missing field, wrong type", 14),
    "tests/test_ntuple_conventions.py::test_xrootd_port_where_nothing_listens": ("XRootD: nothing listens", 14),
    "tests/test_ntuple_conventions.py::test_xrootd_server_that_accepts_but_never_answers":
        ("XRootD: server accepts but never answers", 14),
    "tests/test_heldout_gates.py::test_truth_gate_without_oracle_is_a_config_error_at_load":
        ("truth gate without an oracle: config error at load", 14),
    "tests/test_heldout_gates.py::test_gate_on_a_metric_the_family_never_writes_is_a_config_error_at_load":
        ("gate on a metric the family never writes: config error at load", 14),
    "tests/test_heldout_gates.py::test_train_drops_nan_rows_within_prepare_tolerance_and_names_root_files":
        ("NaN rows in training: one tolerance, ROOT sources named", 14),
}


def case_of(nodeid: str) -> tuple[str, int] | None:
    """The campaign case of a test node id (parametrized ids match their function's prefix)."""
    for prefix, case in CASES.items():
        if nodeid == prefix or nodeid.startswith(prefix):
            return case
    return None
