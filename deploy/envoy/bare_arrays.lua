-- The contract answers list endpoints with a bare JSON array, but the transcoder can only
-- print a message: list RPCs return {"items": [...]} and this filter unwraps it.
-- (response_body on a repeated field makes Envoy refuse to start: envoy issue #11136.)
local PREFIX = '{"items":'

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
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
