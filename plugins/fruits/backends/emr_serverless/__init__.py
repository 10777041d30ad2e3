"""Backend emr_serverless: the jobs as job runs of an EMR Serverless application, no cluster to boot."""
