"""The chaishu application: the job handler that turns a KG task into a book's graph, the
one factory that composes it, its fleet duties and provider fallback, and ``run_worker``,
which hands all of it to the generic runtime."""
