// fedseg-push: one local file to a shared folder, an HTTP(S) server (WebDAV PUT) or an
// S3-compatible store, write-once and retried (DESIGN.md §2, §5).

#include "core/error.h"
#include "core/tool.h"
#include "transfer/transfer.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string src, dest;
  transfer::Options t;
};

int run(Options o, const ToolContext& ctx) { return transfer::run_tool(true, o.src, o.dest, o.t, ctx); }

}  // namespace

const ToolDef& push() {
  static const ToolDef def{
      {
          "push",
          "copy a local file to a shared folder, HTTP(S) server or S3 store, write-once",
          "SRC DEST",
          "Copies the local file SRC to DEST: a path, an http:// or https:// URL (a WebDAV PUT, as nginx's dav "
          "module takes it), or s3://BUCKET/KEY. A DEST that is an existing folder or ends in '/' receives SRC's "
          "base name.\n\n"
          "Names are write-once. A folder copy goes into a temp file in the target folder, is fsynced, renamed "
          "without replacing and the folder fsynced; readers ignore the dot-named temp file. Over HTTP the file "
          "is first looked up with HEAD (a plain WebDAV server would overwrite), then sent whole with "
          "If-None-Match: *; S3 refuses an existing key itself (412). When the file is already there (HEAD 200, "
          "409 or 412) it is compared: the same size and SHA-256 means nothing to do (exit 0), anything else is "
          "refused with 73. The remote SHA-256 comes from the x-amz-meta-sha256 metadata that fedseg-push stores "
          "on S3, or from reading the file back; a server that lets the pusher write but not read (401/403/405 "
          "on GET) is compared by size alone, and --json says \"compared\": \"size\". --force sends the file "
          "without these checks and replaces it where the server allows.\n\n"
          "A PUT cannot be resumed (nginx answers 501 to Content-Range): after a transient failure (HTTP 408, "
          "429, 5xx, connection failures, timeouts, a stall below --stall-speed for --stall-time seconds) the "
          "whole file is sent again, up to --retries times with capped exponential backoff and full jitter; "
          "then the exit status is 75. The server publishes an upload only when it is complete (nginx writes "
          "the body to a temp file and renames it).\n\n"
          "TLS, authentication and S3 options as for fedseg-fetch. Quiet on success unless -v or --json; a "
          "progress line on stderr when it is a terminal.",
          {{"fedseg-push rounds/7/updates/hospital-a.age https://drop.example.org/inbox/hospital-a/ --cacert ca.pem "
            "--cert hospital-a.pem --key hospital-a.key --pin sha256//BASE64",
            "Push an update into the site's inbox on the aggregator's nginx drop, mutual TLS and a pinned key."},
           {"fedseg-push update.age s3://fed1-exchange/rounds/7/updates/hospital-a.age --s3-endpoint "
            "https://minio.example.org:9000",
            "Push to an S3-compatible store, write-once."},
           {"fedseg-push update.age /mnt/exchange/rounds/7/updates/hospital-a.age",
            "Publish into a shared folder atomically."}},
          {{"FEDSEG_TOKEN", "bearer token for HTTP(S) when --token-file is not given"},
           {"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", "S3 credentials"},
           {"AWS_REGION, AWS_DEFAULT_REGION", "S3 region (default us-east-1)"},
           {"AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL", "S3-compatible endpoint"},
           {"AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE", "S3 credentials file and profile"}},
          {{64, "bad options, a malformed URL, or a URL as SRC"},
           {66, "SRC is missing or not a regular file"},
           {69, "TLS failure: certificate not trusted, pinned key mismatch, client certificate refused in the handshake "
                "(a server that refuses it later answers 400: 76, or drops the connection: 75); a plain "
                "http:// URL with --https-only; HTTP 405, 501 (the server does not take PUT)"},
           {73, "DEST exists and differs (HEAD, 409, 412; use --force), the server refuses the size (413), or the "
                "folder or path does not exist (404)"},
           {75, "the server is down, busy (408, 429, 5xx), unreachable or stalled after all retries: retry later"},
           {76, "an unexpected HTTP reply (other 4xx, a redirect, a 2xx such as 202 that does not confirm the file)"},
           {77, "HTTP 401 or 403 (for example another site's inbox)"},
           {78, "S3 credentials missing, or an empty token file"}},
          "A document {\"tool\", \"version\", \"source\", \"destination\", \"status\" (\"ok\" or \"error\"), "
          "\"exit_code\", \"action\" (\"pushed\", \"copied\", \"unchanged\"), \"size\", \"bytes\" (bytes sent "
          "by the successful attempt, or read back to compare), \"resumed_from\" (0), \"seconds\", \"retries\", "
          "\"http_status\" (the last one), \"sha256\" (when computed), \"compared\" (\"sha256\" or \"size\" for "
          "\"unchanged\"), and \"error\" on failure}; printed on failure too.",
          {"fedseg-fetch", "curl", "nginx"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("SRC", o->src, "local file to push")->required()->type_name("SRC");
        app.add_option("DEST", o->dest, "path, folder, http(s):// URL or s3://BUCKET/KEY")->required()->type_name("DEST");
        transfer::add_options(app, o->t);
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
