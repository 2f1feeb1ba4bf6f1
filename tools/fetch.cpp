// fedseg-fetch: one file from a shared folder, an HTTP(S) server or an S3-compatible
// store to a local path, atomically, retried and resumed (DESIGN.md §2, §5).

#include "core/error.h"
#include "core/tool.h"
#include "transfer/transfer.h"

namespace fedseg::tools {
namespace {

struct Options {
  std::string src, dest;
  transfer::Options t;
};

int run(Options o, const ToolContext& ctx) { return transfer::run_tool(false, o.src, o.dest, o.t, ctx); }

}  // namespace

const ToolDef& fetch() {
  static const ToolDef def{
      {
          "fetch",
          "copy a file from a shared folder, HTTP(S) server or S3 store to a local path, atomically",
          "SRC DEST",
          "Copies SRC to DEST. SRC is a path, an http:// or https:// URL, or s3://BUCKET/KEY; DEST is a local "
          "path, or an existing folder (or a path ending in '/'), which receives SRC's base name.\n\n"
          "DEST appears complete or not at all. A download goes into the part file .NAME.fedseg-part next to "
          "DEST (its URL and the server's ETag or Last-Modified in .NAME.fedseg-part.meta); only when the whole "
          "file is there is it fsynced, renamed to DEST without replacing anything, and the folder fsynced. "
          "Readers ignore dot names. A copy from a folder goes the same way through a temp file.\n\n"
          "An existing DEST with the same bytes means nothing to do (exit 0). A different one is refused with 73 "
          "unless --force; when the server's size already differs nothing is downloaded.\n\n"
          "Transient failures (HTTP 408, 429 and 5xx, refused or dropped connections, timeouts, a stall below "
          "--stall-speed for --stall-time seconds) are retried --retries times with capped exponential backoff "
          "and full jitter; each retry resumes with a Range request from the bytes already in the part file "
          "(If-Range with the validator, so that a file changed on the server comes back whole). When retries run "
          "out the part file stays and the exit status is 75: the next run resumes it. There is no total timeout: "
          "files of gigabytes over slow links finish as long as they move.\n\n"
          "HTTPS: --cacert, --cert/--key (mutual TLS), --pin (the server's public key), --https-only. Auth: a "
          "bearer token (--token-file, or FEDSEG_TOKEN), basic auth from netrc (--netrc, --netrc-file). S3: "
          "requests are signed with AWS SigV4 by libcurl; credentials from AWS_ACCESS_KEY_ID / "
          "AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) or an AWS credentials file; a custom endpoint (MinIO, Ceph "
          "RGW) is addressed path-style.\n\n"
          "Quiet on success unless -v or --json; a progress line on stderr when it is a terminal.",
          {{"fedseg-fetch https://drop.example.org/fed1/rounds/7/global.h5 rounds/7/ --cacert ca.pem --cert "
            "site.pem --key site.key",
            "Fetch round 7's global model with mutual TLS into rounds/7/global.h5."},
           {"fedseg-fetch s3://fed1-exchange/LATEST . --s3-endpoint https://minio.example.org:9000",
            "Fetch LATEST from an S3-compatible store into the current folder."},
           {"fedseg-fetch /mnt/exchange/rounds/7/global.h5 rounds/7/global.h5",
            "Copy from a shared folder (NFS, SMB) atomically."}},
          {{"FEDSEG_TOKEN", "bearer token for HTTP(S) when --token-file is not given"},
           {"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", "S3 credentials"},
           {"AWS_REGION, AWS_DEFAULT_REGION", "S3 region (default us-east-1)"},
           {"AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL", "S3-compatible endpoint"},
           {"AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE", "S3 credentials file and profile"}},
          {{64, "bad options, a malformed URL, or a URL as DEST"},
           {65, "the file does not have the SHA-256 given with --sha256"},
           {66, "SRC does not exist (HTTP 404 or 410, or a missing path)"},
           {69, "TLS failure: certificate not trusted, pinned key mismatch, client certificate refused in the handshake "
                "(a server that refuses it later answers 400: 76, or drops the connection: 75); a plain "
                "http:// URL with --https-only; HTTP 405, 501"},
           {73, "DEST exists and differs (use --force), or cannot be created"},
           {75, "the server is down, busy (408, 429, 5xx), unreachable or stalled after all retries, or another "
                "fetch holds the part file: retry later (the part file is kept and resumed)"},
           {76, "an unexpected HTTP reply (other 4xx, a redirect, a 2xx other than 200/206 to a GET or 200/201/204 to a PUT, "
                "a 206 for another range than asked)"},
           {77, "HTTP 401 or 403"},
           {78, "S3 credentials missing, or an empty token file"}},
          "A document {\"tool\", \"version\", \"source\", \"destination\", \"status\" (\"ok\" or \"error\"), "
          "\"exit_code\", \"action\" (\"fetched\", \"copied\", \"unchanged\"), \"size\", \"bytes\" (body bytes "
          "received in this run, all attempts), \"resumed_from\" (bytes already in the part file at the start), "
          "\"seconds\", \"retries\", \"http_status\" (the last one), \"sha256\" (when computed), \"compared\", and "
          "\"error\" on failure}; printed on failure too.",
          {"fedseg-push", "curl", "nginx"},
      },
      [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("SRC", o->src, "path, http(s):// URL or s3://BUCKET/KEY to fetch")->required()->type_name("SRC");
        app.add_option("DEST", o->dest, "local path, or an existing folder")->required()->type_name("DEST");
        app.add_option("--sha256", o->t.expect_sha256, "fail with 65 unless the fetched file has this SHA-256 (hex)")
            ->type_name("HEX");
        transfer::add_options(app, o->t);
        return [o](const ToolContext& ctx) { return run(*o, ctx); };
      },
  };
  return def;
}

}  // namespace fedseg::tools
