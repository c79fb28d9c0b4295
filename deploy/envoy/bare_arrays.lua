-- REST <-> gRPC fixes around the transcoder. Responses: the contract answers list endpoints
-- with a bare JSON array, but the transcoder can only print a message: list RPCs return
-- {"items": [...]} and this filter unwraps it; an error's x-http-status trailer sets its
-- HTTP status. Requests: headers gRPC would refuse are dropped.
-- (response_body on a repeated field makes Envoy refuse to start: envoy issue #11136.)
local PREFIX = '{"items":'

-- HTTP headers reach the api service as gRPC metadata, and gRPC refuses a call (a 500 here)
-- whose metadata has a key outside [0-9a-z_.-], a "-bin" key that is not base64, or a
-- malformed reserved "grpc-" key (grpc-timeout, grpc-encoding). No REST client needs any of
-- them: drop them before the transcoder. (Envoy lowercases header names.)
local function unfit_for_grpc(name)
  if string.sub(name, 1, 1) == ":" then
    return false
  end
  return string.find(name, "^[0-9a-z_.%-]+$") == nil
    or string.sub(name, -4) == "-bin"
    or string.sub(name, 1, 5) == "grpc-"
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local unfit = {}
  for name, _ in pairs(headers) do
    if unfit_for_grpc(name) then
      unfit[#unfit + 1] = name
    end
  end
  for _, name in ipairs(unfit) do
    headers:remove(name)
  end
end

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  -- An error the api wants answered with an HTTP status no gRPC code maps to (422): it
  -- names the status in this trailer (a header of the transcoded error response).
  local override = headers:get("x-http-status")
  if override ~= nil then
    headers:remove("x-http-status")
    if override == "422" then
      headers:replace(":status", override)
    end
  end
  local content_type = headers:get("content-type") or ""
  if string.find(content_type, "application/json", 1, true) == nil then
    return
  end
  -- REST clients have no use for the gRPC status headers the transcoder copies over.
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
  if headers:get(":status") ~= "200" then
    return
  end
  local body = response_handle:body()
  if body == nil then
    return
  end
  local length = body:length()
  if length < #PREFIX + 1 or body:getBytes(0, #PREFIX) ~= PREFIX then
    return
  end
  -- Drop the prefix and the closing brace of the wrapper object.
  local array = body:getBytes(#PREFIX, length - #PREFIX - 1)
  -- setBytes also updates content-length.
  body:setBytes(array)
end
