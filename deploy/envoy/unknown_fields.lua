-- Unknown JSON fields in a request body are a 400 naming the field, before the transcoder:
-- the transcoding library drops a field the request message does not have, silently (no
-- option turns that off), so a misspelt "try_cuont" would otherwise be a task with the
-- default try_count. The tables BODY_ROUTES and MESSAGES are generated from the proto by
-- deploy/envoy/body_fields.py and put in front of this script:
--   BODY_ROUTES = { { method, Lua pattern of the path without query and trailing "/",
--                     request message }, ... }
--   MESSAGES[message][json key] = true (any value: a scalar, a google.protobuf.Value, or a
--                                  read-only field a PUT may send back and is ignored)
--                               | the message a JSON object (or an array of them) must be
-- Only well-formed JSON is judged: a body the walk cannot read is left to the transcoder,
-- which answers malformed JSON with its own 400. The first unknown field is reported (its
-- path as the api names fields, e.g. "tasks[3].callback_params.ring_timout"), in
-- dynamic metadata for the gateway's JSON error body (deploy/envoy/config.py).

local find, sub, byte, char = string.find, string.sub, string.byte, string.char

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
  r = "\r", t = "\t" }

local function utf8_char(code)
  if code < 0x80 then
    return char(code)
  elseif code < 0x800 then
    return char(0xC0 + math.floor(code / 0x40), 0x80 + code % 0x40)
  end
  return char(0xE0 + math.floor(code / 0x1000), 0x80 + math.floor(code / 0x40) % 0x40,
    0x80 + code % 0x40)
end

-- A key as the transcoder reads it: "\u0061" is "a".
local function unescape(raw)
  local out, i = {}, 1
  while true do
    local k = find(raw, "\\", i, true)
    if not k then
      out[#out + 1] = sub(raw, i)
      return table.concat(out)
    end
    out[#out + 1] = sub(raw, i, k - 1)
    local c = sub(raw, k + 1, k + 1)
    if c == "u" then
      local hex = sub(raw, k + 2, k + 5)
      if not find(hex, "^%x%x%x%x$") then
        error("bad escape")
      end
      out[#out + 1] = utf8_char(tonumber(hex, 16))
      i = k + 6
    else
      local e = ESCAPES[c]
      if e == nil then
        error("bad escape")
      end
      out[#out + 1] = e
      i = k + 2
    end
  end
end

local function skip_ws(s, i)
  local _, e = find(s, "^[ \t\r\n]*", i)
  return e + 1
end

-- The string starting at s[i] ('"'): its raw text, the index after it, whether it has escapes.
local function read_string(s, i)
  local j, escaped = i + 1, false
  while true do
    local k = find(s, '["\\]', j)
    if not k then
      error("unterminated string")
    end
    if byte(s, k) == 34 then
      return sub(s, i + 1, k - 1), k + 1, escaped
    end
    escaped = true
    j = k + 2
  end
end

-- A name fit for a message: printable ASCII, the rest as \xNN.
local function printable(name)
  return (name:gsub("[^\32-\126]", function(c)
    return string.format("\\x%02X", byte(c))
  end))
end

local walk_value
local first_unknown = nil -- of the body being walked

-- The object at s[i] ('{'); `fields` its message's keys (nil: any keys). Returns the index
-- after it.
local function walk_object(s, i, fields, path)
  i = skip_ws(s, i + 1)
  if byte(s, i) == 125 then
    return i + 1
  end
  while true do
    if byte(s, i) ~= 34 then
      error("key expected")
    end
    local raw, j, escaped = read_string(s, i)
    local key = escaped and unescape(raw) or raw
    j = skip_ws(s, j)
    if byte(s, j) ~= 58 then
      error("colon expected")
    end
    j = skip_ws(s, j + 1)
    local message, here = nil, nil
    if fields ~= nil then
      here = path == "" and key or (path .. "." .. key)
      local kind = fields[key]
      if kind == nil then
        -- Noted, and the walk goes on: a body that turns out malformed is the transcoder's.
        first_unknown = first_unknown or printable(here)
      elseif kind ~= true then
        message = kind
      end
    end
    j = skip_ws(s, walk_value(s, j, message, here))
    local c = byte(s, j)
    if c == 44 then
      i = skip_ws(s, j + 1)
    elseif c == 125 then
      return j + 1
    else
      error("comma or brace expected")
    end
  end
end

local function walk_array(s, i, message, path)
  i = skip_ws(s, i + 1)
  if byte(s, i) == 93 then
    return i + 1
  end
  local index = 0
  while true do
    i = skip_ws(s, walk_value(s, i, message, message and (path .. "[" .. index .. "]")))
    local c = byte(s, i)
    if c == 44 then
      i = skip_ws(s, i + 1)
      index = index + 1
    elseif c == 93 then
      return i + 1
    else
      error("comma or bracket expected")
    end
  end
end

-- The value at s[i]; `message` the message it must be (nil: anything). Returns the index
-- after it.
function walk_value(s, i, message, path)
  local c = byte(s, i)
  if c == 123 then
    return walk_object(s, i, message and MESSAGES[message], path)
  elseif c == 91 then
    return walk_array(s, i, message, path)
  elseif c == 34 then
    local _, j = read_string(s, i)
    return j
  end
  local _, e = find(s, "^[%w%.%+%-]+", i) -- a number, true, false or null
  if not e then
    error("value expected")
  end
  return e + 1
end

-- The request message of a JSON body sent to this method and path, or nil.
local function body_message(method, path)
  path = path:match("^[^?]*")
  if #path > 1 and sub(path, -1) == "/" then
    path = sub(path, 1, -2)
  end
  for _, route in ipairs(BODY_ROUTES) do
    if route[1] == method and find(path, route[2]) then
      return route[3]
    end
  end
  return nil
end

-- The first unknown field of the body, or nil (none, or not JSON the walk can read).
local function unknown_field(body, message)
  first_unknown = nil
  local ok = pcall(function()
    local i = skip_ws(body, 1)
    if byte(body, i) ~= 123 then
      error("not an object") -- the transcoder's 400
    end
    if skip_ws(body, walk_object(body, i, MESSAGES[message], "")) <= #body then
      error("trailing data")
    end
  end)
  local field = first_unknown
  first_unknown = nil
  return ok and field or nil
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  -- gRPC calls on the REST port are passed through, not transcoded (a binary body).
  local content_type = headers:get("content-type") or ""
  if find(content_type, "application/grpc", 1, true) == 1 then
    return
  end
  local message = body_message(headers:get(":method") or "", headers:get(":path") or "")
  if message == nil then
    return
  end
  local body = request_handle:body()
  if body == nil or body:length() == 0 then
    return
  end
  local field = unknown_field(body:getBytes(0, body:length()), message)
  if field == nil then
    return
  end
  request_handle:streamInfo():dynamicMetadata():set(UNKNOWN_FIELD_NAMESPACE, "field", field)
  request_handle:respond({ [":status"] = "400" },
    "invalid request: " .. field .. ": " .. UNKNOWN_FIELD_DESCRIPTION)
end
