. "$FEDSEG_SOURCE/tests/cli/lib.sh"
. "$FEDSEG_SOURCE/tests/cli/transfer/nginx.bash"
# fedseg-push against a real nginx WebDAV drop: write-once PUT (an identical re-push
# is nothing to do, a different one 73), basic auth from netrc (401 -> 77), a bearer
# token from a file or FEDSEG_TOKEN, folder URLs, missing source -> 66.
plain_server
nginx_start
R=(--retries 2 --retry-delay 0.05)
head -c 200000 /dev/urandom >update.age
head -c 200000 /dev/urandom >other.age

expect_exit 0 fedseg-push update.age "$BASE/dav/rounds/3/updates/site-a.age" "${R[@]}"
expect_stdout_empty
expect_stderr_empty
cmp update.age "$WWW/dav/rounds/3/updates/site-a.age" || fail "pushed bytes differ"
# Identical re-push (HEAD 200, read back, same sha256): nothing to do.
expect_exit 0 fedseg-push update.age "$BASE/dav/rounds/3/updates/site-a.age" "${R[@]}" --json
expect_json
[ "$(json_field action)" = unchanged ] && [ "$(json_field compared)" = sha256 ] || fail "re-push: $(cat stdout)"
# Different bytes under the same name: 73, the server's file untouched.
expect_exit 73 fedseg-push other.age "$BASE/dav/rounds/3/updates/site-a.age" "${R[@]}"
expect_stderr_has "output exists '$BASE/dav/rounds/3/updates/site-a.age'"
cmp update.age "$WWW/dav/rounds/3/updates/site-a.age" || fail "73 changed the server's file"
# The server's own write-once check (409) when our HEAD is skipped: --force sends,
# nginx answers 409, and that is reported as 73.
expect_exit 73 fedseg-push other.age "$BASE/dav/rounds/3/updates/site-a.age" "${R[@]}" --force
# A folder URL takes the source's base name.
expect_exit 0 fedseg-push other.age "$BASE/dav/rounds/3/updates/" "${R[@]}"
cmp other.age "$WWW/dav/rounds/3/updates/other.age" || fail "folder URL"
expect_exit 66 fedseg-push missing.age "$BASE/dav/x.age" "${R[@]}"
expect_exit 64 fedseg-push "$BASE/dav/x.age" here.age

# Basic auth from a netrc file.
printf 'machine 127.0.0.1 login site-a password pw-a\n' >good.netrc
printf 'machine 127.0.0.1 login site-a password wrong\n' >bad.netrc
expect_exit 77 fedseg-push update.age "$BASE/basic/site-a.age" "${R[@]}"
expect_stderr_has "HTTP 401"
expect_exit 77 fedseg-push update.age "$BASE/basic/site-a.age" "${R[@]}" --netrc-file bad.netrc
expect_exit 0 fedseg-push update.age "$BASE/basic/site-a.age" "${R[@]}" --netrc-file good.netrc
cmp update.age "$WWW/basic/site-a.age" || fail "basic-auth push"
# This location overwrites on PUT; the client's HEAD keeps the name write-once.
expect_exit 73 fedseg-push other.age "$BASE/basic/site-a.age" "${R[@]}" --netrc-file good.netrc
cmp update.age "$WWW/basic/site-a.age" || fail "write-once broken on an overwriting server"
expect_exit 0 fedseg-fetch "$BASE/basic/site-a.age" fetched.age "${R[@]}" --netrc-file good.netrc
cmp update.age fetched.age || fail "basic-auth fetch"

# Bearer token from a file or the environment.
echo s3cret-token >token
echo wrong >badtoken
expect_exit 77 fedseg-push update.age "$BASE/bearer/site-a.age" "${R[@]}" --token-file badtoken
expect_exit 0 fedseg-push update.age "$BASE/bearer/site-a.age" "${R[@]}" --token-file token
expect_exit 0 env FEDSEG_TOKEN=s3cret-token fedseg-push other.age "$BASE/bearer/other.age" "${R[@]}"
cmp other.age "$WWW/bearer/other.age" || fail "bearer from FEDSEG_TOKEN"
# No partial upload was ever published: nginx's body temp folder is empty too.
[ -z "$(ls -A "$NGX/body")" ] || fail "nginx body temp files left"
