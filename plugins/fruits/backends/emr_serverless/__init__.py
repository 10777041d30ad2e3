"""Backend emr_serverless (issue 30, in progress): the jobs on an EMR Serverless application, no cluster
to boot. Not registered in fruits.backends.BACKENDS until its tasks land."""
