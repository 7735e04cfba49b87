"""Everything MLflow, and the provenance of every job.

* :mod:`~flashsim.mlops.runs`: the run object of a job (local record + MLflow run) and the MLflow store;
* :mod:`~flashsim.mlops.model_registry`: registered versions and their aliases (candidate, validated, production);
* :mod:`~flashsim.mlops.onnx_model`: an exported ONNX file as an MLflow model (signature, input example);
* :mod:`~flashsim.mlops.workflow`: one parent run per Snakemake invocation (``rules/mlops.smk``);
* :mod:`~flashsim.mlops.provenance`: git state, environment, file hashes, job tags (standard library only);
* commands: ``flashsim promote`` (:mod:`~flashsim.mlops.promote`), ``compare`` (:mod:`~flashsim.mlops.compare`),
  ``provenance`` (:mod:`~flashsim.mlops.provenance_cli`) and ``summarize`` (:mod:`~flashsim.mlops.summary`).
"""
