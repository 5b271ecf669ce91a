"""`distill view`: a read-only local web page over dataset directories (catalog: what may be shown; table: rows
paged, filtered and searched by row group; annotate: what a verdict points at; server: HTTP and the page)."""
