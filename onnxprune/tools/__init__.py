"""Tools around the pipeline that no stage imports: latency benchmark, accuracy, reports and plots."""
