package agentadmin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/service/grpcerr"
	"github.com/outposthq/outpost/server/internal/store"
)

// Page sizes of ListSessions.
const (
	DefaultSessionPageSize = 100
	MaxSessionPageSize     = 500
)

// OutcomeOpen is the ListSessions outcome filter that selects the sessions
// that have not ended (their stored outcome is still empty).
const OutcomeOpen = "open"

// ListSessions returns one page of the session audit, newest first, with the
// request's filters. A page size over MaxSessionPageSize is treated as
// MaxSessionPageSize.
func (s *Service) ListSessions(ctx context.Context, req *outpostv1.ListSessionsRequest) (*outpostv1.ListSessionsResponse, error) {
	opts, err := sessionOptions(req)
	if err != nil {
		return nil, err
	}
	limit := opts.Limit
	// One more row than the page says whether another page follows.
	opts.Limit++
	recs, err := s.cfg.Store.ListSessions(ctx, opts)
	if err != nil {
		return nil, grpcerr.From(fmt.Errorf("list sessions: %w", err))
	}
	resp := &outpostv1.ListSessionsResponse{Sessions: make([]*outpostv1.Session, 0, min(len(recs), limit))}
	for i, r := range recs {
		if i == limit {
			last := recs[i-1]
			resp.NextPageToken = encodeSessionCursor(store.SessionCursor{StartedAt: last.StartedAt, ID: last.ID})
			break
		}
		resp.Sessions = append(resp.Sessions, sessionView(r))
	}
	return resp, nil
}

// sessionOptions checks a ListSessions request and turns it into store
// options; Limit is the page size.
func sessionOptions(req *outpostv1.ListSessionsRequest) (store.ListSessionsOptions, error) {
	var opts store.ListSessionsOptions
	switch size := int(req.GetPageSize()); {
	case size < 0:
		return opts, grpcerr.InvalidArgument("page_size", "must not be negative")
	case size == 0:
		opts.Limit = DefaultSessionPageSize
	default:
		opts.Limit = min(size, MaxSessionPageSize)
	}
	if tok := req.GetPageToken(); tok != "" {
		c, err := decodeSessionCursor(tok)
		if err != nil {
			return opts, grpcerr.InvalidArgument("page_token", err.Error())
		}
		opts.After = &c
	}
	if req.GetAgentId() != "" {
		id, err := uuid.Parse(req.GetAgentId())
		if err != nil || len(req.GetAgentId()) != 36 {
			return opts, grpcerr.InvalidArgument("agent_id", fmt.Sprintf("%q is not a UUID", req.GetAgentId()))
		}
		opts.AgentID = id.String()
	}
	opts.Target = req.GetTarget()
	if req.GetOutcome() == OutcomeOpen {
		opts.OpenOnly = true
	} else {
		opts.Outcome = req.GetOutcome()
	}
	for _, b := range []struct {
		field string
		ts    *timestamppb.Timestamp
		into  *time.Time
	}{{"start_time", req.GetStartTime(), &opts.From}, {"end_time", req.GetEndTime(), &opts.Until}} {
		if b.ts == nil {
			continue
		}
		if err := b.ts.CheckValid(); err != nil {
			return opts, grpcerr.InvalidArgument(b.field, err.Error())
		}
		*b.into = b.ts.AsTime()
	}
	if !opts.From.IsZero() && !opts.Until.IsZero() && opts.From.After(opts.Until) {
		return opts, grpcerr.InvalidArgument("start_time", "is after end_time")
	}
	return opts, nil
}

// sessionView is the API view of an audit record.
func sessionView(r store.SessionRecord) *outpostv1.Session {
	v := &outpostv1.Session{
		SessionId:  r.ID,
		StartedAt:  timestamppb.New(r.StartedAt),
		Target:     r.Target,
		AgentId:    r.AgentID,
		Decision:   r.Decision,
		BytesUp:    uint64(max(r.BytesUp, 0)),
		BytesDown:  uint64(max(r.BytesDown, 0)),
		Outcome:    r.Outcome,
		Reason:     r.Reason,
		KeyId:      r.KeyID,
		ClientAddr: r.ClientAddr,
	}
	if !r.EndedAt.IsZero() {
		v.EndedAt = timestamppb.New(r.EndedAt)
		v.Duration = durationpb.New(r.EndedAt.Sub(r.StartedAt))
	}
	return v
}

// errSessionToken is the reason for any page token that does not decode.
var errSessionToken = errors.New("malformed page token")

// encodeSessionCursor writes "unix-millis/id", base64url.
func encodeSessionCursor(c store.SessionCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.StartedAt.UnixMilli(), 10) + "/" + c.ID))
}

func decodeSessionCursor(tok string) (store.SessionCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return store.SessionCursor{}, errSessionToken
	}
	ms, id, ok := strings.Cut(string(b), "/")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || id == "" {
		return store.SessionCursor{}, errSessionToken
	}
	return store.SessionCursor{StartedAt: time.UnixMilli(n).UTC(), ID: id}, nil
}
