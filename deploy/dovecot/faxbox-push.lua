-- Faxbox push for Dovecot: wake the mail-poller the moment mail lands in a folder it
-- watches, instead of IMAP IDLE's fixed half-second notification delay.
--
-- The active mail-poller registers the URL of its HTTP endpoint on the folder it watches:
--   SETMETADATA INBOX (/private/vendor/vendor.faxbox/push-url "http://host:port/imap-push/<token>")
-- and at the end of every transaction that delivered (LMTP, MessageNew) or appended
-- (IMAP APPEND/COPY, MessageAppend) mail into a folder with such a URL, this script
-- POSTs to it. The POST carries nothing but the wake-up: the poller then looks at the
-- folder itself over IMAP, so a lost or spurious push costs one SEARCH, never a mail.
-- Folders without the key (the poller's Processed folder, users' own folders) cost a
-- metadata lookup and nothing else.
--
-- Dovecot settings (deploy/local/dovecot.sh writes them):
--   mail_plugins = $mail_plugins mail_lua notify push_notification push_notification_lua
--   mail_attribute_dict = file:%h/dovecot-attributes
--   protocol imap { imap_metadata = yes }
--   plugin { push_notification_driver = lua:file=/path/to/faxbox-push.lua }

local PUSH_URL_KEY = "/private/vendor/vendor.faxbox/push-url"

local http_client = nil

function script_init()
  -- Short limits: the POST runs inside the delivering process, after the mail is
  -- committed; a poller that went away must not hold deliveries up.
  http_client = dovecot.http.client({
    user_agent = "dovecot-faxbox-push",
    max_attempts = 1,
    no_auto_retry = true,
    connect_timeout_msecs = 300,
    request_timeout_msecs = 1000,
    request_absolute_timeout_msecs = 1500,
  })
  return 0
end

function dovecot_lua_notify_begin_txn(user)
  return { user = user, folders = {} }
end

local function mail_arrived(ctx, event)
  ctx.folders[event.mailbox] = true
end

function dovecot_lua_notify_event_message_new(ctx, event)
  mail_arrived(ctx, event)
end

function dovecot_lua_notify_event_message_append(ctx, event)
  mail_arrived(ctx, event)
end

local function push_url_of(user, folder)
  local mailbox = user:mailbox(folder)
  local ok, url = pcall(mailbox.metadata_get, mailbox, PUSH_URL_KEY)
  mailbox:free()
  if ok and type(url) == "string" and url ~= "" then
    return url
  end
  return nil
end

local function push(url, user, folder)
  local request = http_client:request({ url = url, method = "POST" })
  request:add_header("Content-Type", "text/plain")
  request:set_payload(user.username .. "\n" .. folder .. "\n")
  local ok, response = pcall(request.submit, request)
  if not ok then
    dovecot.i_warning("faxbox push to " .. url .. " failed: " .. tostring(response))
    return
  end
  local status = response:status()
  -- Dovecot's client reports its own failures (no connection, timeout) as 9xxx: a
  -- poller that went away without withdrawing its URL; its successor replaces it.
  if status >= 9000 then
    dovecot.i_info("faxbox push to " .. url .. " not delivered: " .. response:reason())
  elseif status ~= 200 then
    dovecot.i_info("faxbox push to " .. url .. ": HTTP " .. status)
  end
end

function dovecot_lua_notify_end_txn(ctx)
  for folder, _ in pairs(ctx.folders) do
    local url = push_url_of(ctx.user, folder)
    if url ~= nil then
      push(url, ctx.user, folder)
    end
  end
end
