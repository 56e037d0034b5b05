-- wrk script: the bench user's login, again and again (scripts/edge-bench's login storm).
wrk.method = "POST"
wrk.body = '{"email":"bench@example.com","password":"Tq7!vexing-Walrus-orbit"}'
wrk.headers["Content-Type"] = "application/json"
