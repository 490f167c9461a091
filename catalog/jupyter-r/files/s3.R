# datalab's S3 helpers for R: the user's object storage with the credentials the platform
# injects (renewable ones from AWS_CONTAINER_CREDENTIALS_FULL_URI, else the AWS_* keys), signed
# with AWS Signature Version 4 using curl, openssl, jsonlite and xml2 (Debian's r-cran-*).
# Paths are "bucket/key" or "s3://bucket/key"; S3_WORKING_DIRECTORY is your bucket/prefix/.
#   s3_read_csv("s3://user-alice/data.csv"); s3_ls("user-alice/"); s3_put("user-alice/x", "x.rds")
local({
  cache <- new.env()

  credentials <- function() {
    uri <- Sys.getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    if (!nzchar(uri)) {
      return(list(key = Sys.getenv("AWS_ACCESS_KEY_ID"),
                  secret = Sys.getenv("AWS_SECRET_ACCESS_KEY"),
                  token = Sys.getenv("AWS_SESSION_TOKEN")))
    }
    # renewed by the platform: fetched again 5 minutes before they expire
    if (!is.null(cache$creds) && Sys.time() < cache$renew_at) return(cache$creds)
    handle <- curl::new_handle()
    auth <- Sys.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    if (nzchar(auth)) curl::handle_setheaders(handle, Authorization = auth)
    answer <- curl::curl_fetch_memory(uri, handle = handle)
    if (answer$status_code != 200) {
      stop("S3 credentials: ", uri, " answered ", answer$status_code, ": ",
           rawToChar(answer$content), call. = FALSE)
    }
    body <- jsonlite::fromJSON(rawToChar(answer$content))
    cache$creds <- list(key = body$AccessKeyId, secret = body$SecretAccessKey,
                        token = if (is.null(body$Token)) "" else body$Token)
    expires <- if (is.null(body$Expiration)) Sys.time() + 600 else
      as.POSIXct(sub("Z$", "", body$Expiration), format = "%Y-%m-%dT%H:%M:%OS", tz = "UTC")
    cache$renew_at <- expires - 300
    cache$creds
  }

  hex <- function(bytes) paste(format(as.hexmode(as.integer(bytes)), width = 2), collapse = "")
  sha256 <- function(x) hex(openssl::sha256(if (is.raw(x)) x else charToRaw(enc2utf8(x))))
  hmac <- function(key, text) as.raw(openssl::sha256(charToRaw(enc2utf8(text)), key = key))
  encode <- function(x) vapply(x, utils::URLencode, "", reserved = TRUE, USE.NAMES = FALSE)

  split_path <- function(path) {
    path <- sub("^s3://", "", sub("^/+", "", path))
    slash <- regexpr("/", path, fixed = TRUE)
    if (slash < 0) return(list(bucket = path, key = ""))
    list(bucket = substr(path, 1, slash - 1), key = substring(path, slash + 1))
  }

  # one signed request (path-style addressing); the response, or an error naming S3's answer
  request <- function(method, path, query = list(), body = raw(0)) {
    endpoint <- sub("/+$", "", Sys.getenv("AWS_ENDPOINT_URL"))
    if (!nzchar(endpoint)) {
      host <- Sys.getenv("AWS_S3_ENDPOINT", "s3.amazonaws.com")
      endpoint <- paste0("https://", host)
    }
    host <- sub("^https?://", "", endpoint)
    region <- Sys.getenv("AWS_DEFAULT_REGION", "us-east-1")
    creds <- credentials()
    parts <- split_path(path)
    segments <- strsplit(parts$key, "/", fixed = TRUE)[[1]]
    resource <- paste0("/", parts$bucket, if (nzchar(parts$key))
      paste0("/", paste(encode(segments), collapse = "/"),
             if (endsWith(parts$key, "/")) "/" else "") else "")
    names <- sort(names(query))
    canonical_query <- paste(vapply(names, function(n)
      paste0(encode(n), "=", encode(as.character(query[[n]]))), ""), collapse = "&")
    now <- Sys.time()
    amz_date <- format(now, "%Y%m%dT%H%M%SZ", tz = "UTC")
    day <- format(now, "%Y%m%d", tz = "UTC")
    payload <- sha256(body)
    headers <- c(host = host, `x-amz-content-sha256` = payload, `x-amz-date` = amz_date)
    if (nzchar(creds$token)) headers <- c(headers, `x-amz-security-token` = creds$token)
    headers <- headers[order(names(headers))]
    signed <- paste(names(headers), collapse = ";")
    canonical <- paste(method, resource, canonical_query,
                       paste0(names(headers), ":", headers, "\n", collapse = ""),
                       signed, payload, sep = "\n")
    scope <- paste(day, region, "s3", "aws4_request", sep = "/")
    to_sign <- paste("AWS4-HMAC-SHA256", amz_date, scope, sha256(canonical), sep = "\n")
    key <- hmac(hmac(hmac(hmac(charToRaw(paste0("AWS4", creds$secret)), day), region), "s3"),
                "aws4_request")
    signature <- hex(hmac(key, to_sign))
    authorization <- sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                             creds$key, scope, signed, signature)
    handle <- curl::new_handle(customrequest = method)
    sent <- as.list(headers[names(headers) != "host"])
    do.call(curl::handle_setheaders, c(list(handle), sent, list(Authorization = authorization)))
    if (method %in% c("PUT", "POST")) {
      curl::handle_setopt(handle, post = TRUE, postfieldsize = length(body), postfields = body)
    }
    url <- paste0(endpoint, resource, if (nzchar(canonical_query)) paste0("?", canonical_query))
    answer <- curl::curl_fetch_memory(url, handle = handle)
    if (answer$status_code >= 300) {
      stop(sprintf("S3 %s %s: %d %s", method, path, answer$status_code,
                   rawToChar(answer$content)), call. = FALSE)
    }
    answer
  }

  helpers <- list(
    # the object's bytes
    s3_get = function(path) request("GET", path)$content,
    # the object read as CSV (arguments go to utils::read.csv)
    s3_read_csv = function(path, ...) {
      utils::read.csv(text = rawToChar(request("GET", path)$content), ...)
    },
    # the object written to a local file
    s3_download = function(path, file) writeBin(request("GET", path)$content, file),
    # a local file (or a raw vector) uploaded
    s3_put = function(path, what) {
      body <- if (is.raw(what)) what else readBin(what, "raw", file.info(what)$size)
      invisible(request("PUT", path, body = body)$status_code)
    },
    # the keys under a prefix ("bucket/prefix")
    s3_ls = function(path) {
      parts <- split_path(path)
      keys <- character(0)
      token <- NULL
      repeat {
        query <- list(`list-type` = "2", prefix = parts$key)
        if (!is.null(token)) query[["continuation-token"]] <- token
        page <- xml2::read_xml(request("GET", parts$bucket, query)$content)
        xml2::xml_ns_strip(page)
        keys <- c(keys, xml2::xml_text(xml2::xml_find_all(page, "//Contents/Key")))
        if (xml2::xml_text(xml2::xml_find_first(page, "//IsTruncated")) != "true") break
        token <- xml2::xml_text(xml2::xml_find_first(page, "//NextContinuationToken"))
      }
      keys
    }
  )
  attach(helpers, name = "datalab:s3", warn.conflicts = FALSE)
})
