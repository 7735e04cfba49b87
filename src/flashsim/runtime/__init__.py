"""Flash-simulation runtime: the chain of exported models on generator-level particles, and C-ABI artifacts.

- :mod:`~flashsim.runtime.chain`: acceptance -> efficiency -> resolution / covariance -> PID, batched, in torch on
  the CPU or a CUDA GPU with ONNX Runtime IO binding (:mod:`~flashsim.runtime.session`);
- :mod:`~flashsim.runtime.simulate`: ``flashsim simulate`` (ROOT / sample / particle gun in, ROOT ntuple out);
- :mod:`~flashsim.runtime.cabi`: per-particle shared objects ``float* f(float* out, const float* in)``
  (tl2cgen for tree ensembles, emx-onnx-cgen for networks), ``flashsim cabi``;
- :mod:`~flashsim.runtime.toys`: small trained stand-ins following the models' ONNX convention.
"""
