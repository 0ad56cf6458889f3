"""The jobs behind the entry scripts, one module each (train_job for train.py, eval_job,
predict_job with online_job and predict_output, export_job for inference_model.py,
quantize_job for tools/quantize.py), and entry.run_job, the body they share.

May import: utils, models, metrics, reader, engines, training, inference."""
