# m2f_plugin's training guards, declared in the config so that every way of
# starting a run gets them: tools/train.py, `mim train m2f_plugin CFG` and a
# plain `Runner.from_cfg(cfg).train()` in your own script. The config must
# import the plugin (custom_imports = dict(imports=['m2f_plugin'], ...)).
#
# mmengine replaces a list that a child config sets, so a child that sets its
# own custom_hooks drops these unless it extends them:
#     custom_hooks = _base_.custom_hooks + [dict(type='MyHook')]
# (tools/train.py adds back the guards a config leaves out, with a warning;
# other entry points do not).
custom_hooks = [
    # a head / data-set class-count mismatch fails before the first step
    dict(type='M2FNumClassesCheckHook'),
    # a NaN/Inf loss stops the run, naming the terms and images ('auto':
    # under AmpOptimWrapper the loss scaler's skipped steps are counted)
    dict(type='M2FNonFiniteLossHook', policy='auto'),
    # no checkpoint with NaN/Inf weights is written, kept as best, or loaded
    dict(type='M2FFiniteCheckpointHook'),
    # a resume never trains silently on another schedule than the config's
    # (tools/train.py --resume-schedule {error,config,checkpoint} sets it)
    dict(type='M2FResumeScheduleHook', on_change='error'),
]
