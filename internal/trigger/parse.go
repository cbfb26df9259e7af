package trigger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/recycle"
)

// MaxMessageBytes is SQS's largest message (256 KiB); anything longer is not an
// SQS message body and is refused before it is decoded.
const MaxMessageBytes = 256 * 1024

// Parse reads one message body. It understands:
//
//   - EventBridge events (through an EventBridge rule → SQS target): lifecycle
//     actions, CloudWatch alarm state changes, AWS Health scheduled changes for EC2,
//     EC2 rebalance recommendations;
//   - SNS envelopes (an SNS topic subscribed by the queue, raw delivery off) around
//     any of these or around a CloudWatch alarm notification;
//   - CloudWatch alarm notifications as SNS delivers them with raw delivery on;
//   - lifecycle hook notifications sent by Auto Scaling straight to the queue
//     (the hook's NotificationTargetARN), test notifications included.
//
// The result is an Event, or an *IgnoredError (well formed, not ours) or a
// *MalformedError (poison). Parse has no side effects.
func Parse(body []byte) (Event, error) {
	return parse(body, 0)
}

func parse(body []byte, depth int) (Event, error) {
	if len(body) > MaxMessageBytes {
		return Event{}, malformed("message", "%d bytes, more than SQS's 256 KiB", len(body))
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return Event{}, malformed("message", "not a JSON object: %v", err)
	}
	has := func(k string) bool { _, ok := probe[k]; return ok }
	switch {
	case has("detail-type") && has("source"):
		return parseEventBridge(body)
	case has("Type") && has("TopicArn") && has("Message"):
		if depth > 0 {
			return Event{}, malformed("SNS notification", "an SNS envelope inside an SNS envelope")
		}
		return parseSNS(body, depth)
	case has("AlarmName") && has("NewStateValue"):
		return parseAlarmNotification(body, "")
	case has("LifecycleTransition") || has("Event"):
		return parseHookNotification(body)
	}
	return Event{}, ignored("unknown message shape (keys %s): not an EventBridge event, SNS notification, alarm or lifecycle notification", keys(probe))
}

func keys(m map[string]json.RawMessage) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	if len(ks) > 8 {
		ks = append(ks[:8], "…")
	}
	return strings.Join(ks, ",")
}

// eventBridge is the EventBridge envelope
// (https://docs.aws.amazon.com/eventbridge/latest/ref/overiew-event-structure.html).
type eventBridge struct {
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       time.Time       `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

// Detail types we act on or knowingly ignore.
const (
	detailTerminateAction = "EC2 Instance-terminate Lifecycle Action"
	detailLaunchAction    = "EC2 Instance-launch Lifecycle Action"
	detailAlarm           = "CloudWatch Alarm State Change"
	detailHealth          = "AWS Health Event"
	detailRebalance       = "EC2 Instance Rebalance Recommendation"
)

func parseEventBridge(body []byte) (Event, error) {
	var ev eventBridge
	if err := decode(body, &ev); err != nil {
		return Event{}, malformed("EventBridge event", "%v", err)
	}
	if ev.ID == "" {
		return Event{}, malformed("EventBridge event", "id is empty")
	}
	if len(ev.Detail) == 0 || string(ev.Detail) == "null" {
		return Event{}, malformed("EventBridge event "+ev.ID, "detail is missing")
	}
	switch {
	case ev.Source == "aws.autoscaling" && ev.DetailType == detailTerminateAction:
		return lifecycleFromEventBridge(ev)
	case ev.Source == "aws.autoscaling" && ev.DetailType == detailLaunchAction:
		return Event{}, ignored("launch lifecycle action (event %s): launches are not ours to answer", ev.ID)
	case ev.Source == "aws.cloudwatch" && ev.DetailType == detailAlarm:
		return alarmFromEventBridge(ev)
	case ev.Source == "aws.health" && ev.DetailType == detailHealth:
		return healthFromEventBridge(ev)
	case ev.Source == "aws.ec2" && ev.DetailType == detailRebalance:
		return rebalanceFromEventBridge(ev)
	}
	return Event{}, ignored("EventBridge event %s from %s of type %q: not a trigger Recycler handles", ev.ID, ev.Source, ev.DetailType)
}

// lifecycleDetail is the detail of a lifecycle action event, and (with the extra
// fields of hookNotification) of the notification a hook sends to its target.
//
// Sample (https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pools-eventbridge-events.html,
// "EC2 Instance-terminate Lifecycle Action"):
//
//	{
//	  "version": "0",
//	  "id": "468fcd35-a5cc-4a8c-e4c5-ec5d0d8d6f1c",
//	  "detail-type": "EC2 Instance-terminate Lifecycle Action",
//	  "source": "aws.autoscaling",
//	  "account": "123456789012",
//	  "time": "2021-01-13T00:12:37.214Z",
//	  "region": "us-west-2",
//	  "resources": ["arn:aws:autoscaling:us-west-2:123456789012:autoScalingGroup:042cba90-ad2f-431c-9b4d-6d9055bcc9fb:autoScalingGroupName/my-asg"],
//	  "detail": {
//	    "LifecycleActionToken": "42c5f9b4-6e1d-4aa0-a6a5-ba2de67c7b09",
//	    "AutoScalingGroupName": "my-asg",
//	    "LifecycleHookName": "my-lifecycle-hook",
//	    "EC2InstanceId": "i-0123456789abcdef0",
//	    "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
//	    "NotificationMetadata": "additional-info",
//	    "Origin": "AutoScalingGroup",
//	    "Destination": "EC2"
//	  }
//	}
type lifecycleDetail struct {
	LifecycleActionToken string `json:"LifecycleActionToken"`
	AutoScalingGroupName string `json:"AutoScalingGroupName"`
	LifecycleHookName    string `json:"LifecycleHookName"`
	EC2InstanceID        string `json:"EC2InstanceId"`
	LifecycleTransition  string `json:"LifecycleTransition"`
	NotificationMetadata string `json:"NotificationMetadata"`
	Origin               string `json:"Origin"`
	Destination          string `json:"Destination"`
}

const (
	transitionTerminating = "autoscaling:EC2_INSTANCE_TERMINATING"
	transitionLaunching   = "autoscaling:EC2_INSTANCE_LAUNCHING"
)

func lifecycleFromEventBridge(ev eventBridge) (Event, error) {
	var d lifecycleDetail
	if err := decode(ev.Detail, &d); err != nil {
		return Event{}, malformed("lifecycle action "+ev.ID, "detail: %v", err)
	}
	return lifecycleEvent(ev.ID, ev.Time, d)
}

func lifecycleEvent(id string, at time.Time, d lifecycleDetail) (Event, error) {
	what := "lifecycle action " + id
	switch d.LifecycleTransition {
	case transitionTerminating:
	case transitionLaunching:
		return Event{}, ignored("launch lifecycle action %s for %s: launches are not ours to answer", id, d.EC2InstanceID)
	default:
		return Event{}, malformed(what, "LifecycleTransition %q is neither %s nor %s", d.LifecycleTransition, transitionTerminating, transitionLaunching)
	}
	var missing []string
	for k, v := range map[string]string{"LifecycleActionToken": d.LifecycleActionToken, "AutoScalingGroupName": d.AutoScalingGroupName,
		"LifecycleHookName": d.LifecycleHookName, "EC2InstanceId": d.EC2InstanceID} {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return Event{}, malformed(what, "missing %s", strings.Join(missing, ", "))
	}
	if err := cloud.ValidateInstanceID(d.EC2InstanceID); err != nil {
		return Event{}, malformed(what, "%v", err)
	}
	if err := cloud.ValidateGroupName(d.AutoScalingGroupName); err != nil {
		return Event{}, malformed(what, "%v", err)
	}
	return Event{
		// The token names the action itself: a hook notification and an EventBridge
		// event of the same action deduplicate to one recycle.
		ID:          "hook:" + d.LifecycleActionToken,
		Kind:        KindLifecycleTerminate,
		Time:        at,
		InstanceIDs: []string{d.EC2InstanceID},
		Hook: &recycle.LifecycleHook{
			Group: d.AutoScalingGroupName, Name: d.LifecycleHookName, Token: d.LifecycleActionToken,
			StartedAt: at.UTC(),
		},
		Reason: fmt.Sprintf("terminate lifecycle hook %s of group %s", d.LifecycleHookName, d.AutoScalingGroupName),
	}, nil
}

// hookNotification is what a lifecycle hook sends to its notification target
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/prepare-for-lifecycle-notifications.html):
//
//	{
//	  "Origin": "AutoScalingGroup", "Destination": "EC2",
//	  "LifecycleHookName": "my-hook", "AccountId": "123456789012",
//	  "RequestId": "63f5b5c2-58b3-0574-b7ed-83f6d4d0f6b0",
//	  "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
//	  "AutoScalingGroupName": "my-asg", "Service": "AWS Auto Scaling",
//	  "Time": "2021-01-13T00:12:37.214Z", "EC2InstanceId": "i-0123456789abcdef0",
//	  "LifecycleActionToken": "42c5f9b4-6e1d-4aa0-a6a5-ba2de67c7b09"
//	}
//
// and, when the hook is created, a test message:
//
//	{"AccountId": "123456789012", "RequestId": "…", "AutoScalingGroupARN": "arn:…",
//	 "AutoScalingGroupName": "my-asg", "Service": "AWS Auto Scaling",
//	 "Event": "autoscaling:TEST_NOTIFICATION", "Time": "2021-01-13T00:12:37.214Z"}
type hookNotification struct {
	lifecycleDetail
	RequestID string    `json:"RequestId"`
	Time      time.Time `json:"Time"`
	Event     string    `json:"Event"`
}

func parseHookNotification(body []byte) (Event, error) {
	var n hookNotification
	if err := decode(body, &n); err != nil {
		return Event{}, malformed("lifecycle notification", "%v", err)
	}
	if n.Event == "autoscaling:TEST_NOTIFICATION" {
		return Event{}, ignored("test notification of group %s", n.AutoScalingGroupName)
	}
	if n.Event != "" && n.LifecycleTransition == "" {
		return Event{}, ignored("Auto Scaling notification %q of group %s: not a lifecycle action", n.Event, n.AutoScalingGroupName)
	}
	id := n.RequestID
	if id == "" {
		id = n.LifecycleActionToken
	}
	return lifecycleEvent(id, n.Time, n.lifecycleDetail)
}

// alarmDetail is the detail of a "CloudWatch Alarm State Change" event
// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-and-eventbridge.html):
//
//	{
//	  "version": "0", "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
//	  "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
//	  "account": "123456789012", "time": "2019-10-02T17:04:40Z", "region": "us-east-1",
//	  "resources": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:ServerCpuTooHigh"],
//	  "detail": {
//	    "alarmName": "ServerCpuTooHigh",
//	    "configuration": {
//	      "description": "Goes into alarm when server CPU utilization is too high!",
//	      "metrics": [{
//	        "id": "30b6c6b2-a864-43a2-4877-c09a1afc3b87",
//	        "metricStat": {
//	          "metric": {"dimensions": {"InstanceId": "i-12345678901234567"},
//	                     "name": "CPUUtilization", "namespace": "AWS/EC2"},
//	          "period": 300, "stat": "Average"},
//	        "returnData": true}]},
//	    "previousState": {"reason": "…", "timestamp": "2019-10-02T17:04:40.985+0000", "value": "OK"},
//	    "state": {"reason": "Threshold Crossed: 1 out of the last 1 datapoints [0.0666851903306472 (01/10/19 13:46:00)] was greater than the threshold (50.0) (minimum 1 datapoint for OK -> ALARM transition).",
//	              "timestamp": "2019-10-02T17:04:40.989+0000", "value": "ALARM"}
//	  }
//	}
type alarmDetail struct {
	AlarmName     string `json:"alarmName"`
	Configuration struct {
		Metrics []struct {
			ID         string `json:"id"`
			MetricStat *struct {
				Metric struct {
					Dimensions map[string]string `json:"dimensions"`
					Name       string            `json:"name"`
					Namespace  string            `json:"namespace"`
				} `json:"metric"`
			} `json:"metricStat"`
		} `json:"metrics"`
	} `json:"configuration"`
	State struct {
		Value  string `json:"value"`
		Reason string `json:"reason"`
	} `json:"state"`
}

const alarmStateAlarm = "ALARM"

func alarmFromEventBridge(ev eventBridge) (Event, error) {
	var d alarmDetail
	if err := decode(ev.Detail, &d); err != nil {
		return Event{}, malformed("alarm state change "+ev.ID, "detail: %v", err)
	}
	if d.AlarmName == "" || d.State.Value == "" {
		return Event{}, malformed("alarm state change "+ev.ID, "alarmName or state.value is missing")
	}
	if d.State.Value != alarmStateAlarm {
		return Event{}, ignored("alarm %s went to %s (only ALARM starts a recycle)", d.AlarmName, d.State.Value)
	}
	var dims []map[string]string
	for _, m := range d.Configuration.Metrics {
		if m.MetricStat != nil {
			dims = append(dims, m.MetricStat.Metric.Dimensions)
		}
	}
	return alarmEvent("alarm:"+ev.ID, ev.Time, d.AlarmName, dims)
}

// alarmNotification is the message CloudWatch publishes to an SNS topic
// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html):
//
//	{"AlarmName": "cpu-high", "AlarmDescription": null, "AWSAccountId": "123456789012",
//	 "NewStateValue": "ALARM", "NewStateReason": "Threshold Crossed: …",
//	 "StateChangeTime": "2021-01-13T00:12:37.214+0000", "Region": "US East (N. Virginia)",
//	 "AlarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:cpu-high", "OldStateValue": "OK",
//	 "Trigger": {"MetricName": "CPUUtilization", "Namespace": "AWS/EC2", "StatisticType": "Statistic",
//	             "Statistic": "AVERAGE", "Unit": null,
//	             "Dimensions": [{"value": "i-0123456789abcdef0", "name": "InstanceId"}],
//	             "Period": 300, "EvaluationPeriods": 1, "ComparisonOperator": "GreaterThanThreshold",
//	             "Threshold": 80.0}}
type alarmNotification struct {
	AlarmName       string `json:"AlarmName"`
	NewStateValue   string `json:"NewStateValue"`
	NewStateReason  string `json:"NewStateReason"`
	StateChangeTime string `json:"StateChangeTime"` // "2021-01-13T00:12:37.214+0000": not RFC 3339
	Trigger         struct {
		Dimensions []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"Dimensions"`
		Metrics []struct {
			MetricStat *struct {
				Metric struct {
					Dimensions []struct {
						Name  string `json:"name"`
						Value string `json:"value"`
					} `json:"Dimensions"`
				} `json:"Metric"`
			} `json:"MetricStat"`
		} `json:"Metrics"`
	} `json:"Trigger"`
}

func parseAlarmNotification(body []byte, snsID string) (Event, error) {
	var n alarmNotification
	if err := decode(body, &n); err != nil {
		return Event{}, malformed("alarm notification", "%v", err)
	}
	if n.AlarmName == "" {
		return Event{}, malformed("alarm notification", "AlarmName is empty")
	}
	if n.NewStateValue != alarmStateAlarm {
		return Event{}, ignored("alarm %s went to %s (only ALARM starts a recycle)", n.AlarmName, n.NewStateValue)
	}
	at, _ := time.Parse("2006-01-02T15:04:05.000-0700", n.StateChangeTime)
	var dims []map[string]string
	add := func(list []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}) {
		m := map[string]string{}
		for _, d := range list {
			m[d.Name] = d.Value
		}
		dims = append(dims, m)
	}
	add(n.Trigger.Dimensions)
	for _, m := range n.Trigger.Metrics {
		if m.MetricStat != nil {
			add(m.MetricStat.Metric.Dimensions)
		}
	}
	// Without an SNS envelope (raw delivery) nothing names this notification but the
	// alarm and the moment it changed state.
	id := snsID
	if id == "" {
		id = n.AlarmName + "@" + n.StateChangeTime
	}
	return alarmEvent("alarm:"+id, at, n.AlarmName, dims)
}

// Dimensions that name what an alarm watches.
const (
	dimInstance = "InstanceId"
	dimGroup    = "AutoScalingGroupName"
)

func alarmEvent(id string, at time.Time, name string, dims []map[string]string) (Event, error) {
	ev := Event{ID: id, Kind: KindAlarm, Time: at, Reason: "CloudWatch alarm " + name + " in ALARM"}
	for _, d := range dims {
		if v, ok := d[dimInstance]; ok {
			if err := cloud.ValidateInstanceID(v); err != nil {
				return Event{}, malformed("alarm "+name, "dimension %s: %v", dimInstance, err)
			}
			if !slices.Contains(ev.InstanceIDs, v) {
				ev.InstanceIDs = append(ev.InstanceIDs, v)
			}
		}
		if v, ok := d[dimGroup]; ok && ev.Group == "" {
			if err := cloud.ValidateGroupName(v); err != nil {
				return Event{}, malformed("alarm "+name, "dimension %s: %v", dimGroup, err)
			}
			ev.Group = v
		}
	}
	if len(ev.InstanceIDs) > 0 {
		ev.Group = "" // the instances are what the alarm is about
	}
	if len(ev.InstanceIDs) == 0 && ev.Group == "" {
		return Event{}, ignored("alarm %s names neither an %s nor an %s dimension: nothing to recycle", name, dimInstance, dimGroup)
	}
	return ev, nil
}

// healthDetail is the detail of an "AWS Health Event"
// (https://docs.aws.amazon.com/health/latest/ug/aws-health-events-eventbridge-schema.html):
//
//	{
//	  "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
//	  "detail-type": "AWS Health Event", "source": "aws.health",
//	  "account": "123456789012", "time": "2023-01-27T01:43:21Z", "region": "us-east-1",
//	  "resources": ["i-0123456789abcdef0"],
//	  "detail": {
//	    "eventArn": "arn:aws:health:us-east-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED_1",
//	    "service": "EC2", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
//	    "eventTypeCategory": "scheduledChange", "eventScopeCode": "ACCOUNT_SPECIFIC",
//	    "startTime": "Fri, 10 Feb 2023 12:00:00 GMT", "endTime": "Fri, 10 Feb 2023 14:00:00 GMT",
//	    "eventDescription": [{"language": "en_US", "latestDescription": "…"}],
//	    "affectedEntities": [{"entityValue": "i-0123456789abcdef0"}]
//	  }
//	}
type healthDetail struct {
	EventArn          string `json:"eventArn"`
	Service           string `json:"service"`
	EventTypeCode     string `json:"eventTypeCode"`
	EventTypeCategory string `json:"eventTypeCategory"`
	AffectedEntities  []struct {
		EntityValue string `json:"entityValue"`
	} `json:"affectedEntities"`
}

func healthFromEventBridge(ev eventBridge) (Event, error) {
	var d healthDetail
	if err := decode(ev.Detail, &d); err != nil {
		return Event{}, malformed("AWS Health event "+ev.ID, "detail: %v", err)
	}
	if d.Service != "EC2" || d.EventTypeCategory != "scheduledChange" {
		return Event{}, ignored("AWS Health event %s (%s, %s): only EC2 scheduled changes start a recycle", ev.ID, d.Service, d.EventTypeCategory)
	}
	out := Event{ID: "health:" + ev.ID, Kind: KindScheduledChange, Time: ev.Time,
		Reason: "AWS Health scheduled change " + d.EventTypeCode}
	for _, e := range d.AffectedEntities {
		if !strings.HasPrefix(e.EntityValue, "i-") {
			continue // other entity kinds (volumes, hosts) are not nodes
		}
		if err := cloud.ValidateInstanceID(e.EntityValue); err != nil {
			return Event{}, malformed("AWS Health event "+ev.ID, "affected entity: %v", err)
		}
		if !slices.Contains(out.InstanceIDs, e.EntityValue) {
			out.InstanceIDs = append(out.InstanceIDs, e.EntityValue)
		}
	}
	if len(out.InstanceIDs) == 0 {
		return Event{}, ignored("AWS Health event %s names no EC2 instance", ev.ID)
	}
	return out, nil
}

// rebalanceDetail is the detail of an "EC2 Instance Rebalance Recommendation"
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html):
//
//	{
//	  "version": "0", "id": "12345678-1234-1234-1234-123456789012",
//	  "detail-type": "EC2 Instance Rebalance Recommendation", "source": "aws.ec2",
//	  "account": "123456789012", "time": "2020-10-26T14:14:14Z", "region": "us-east-2",
//	  "resources": ["arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890abcdef0"],
//	  "detail": {"instance-id": "i-1234567890abcdef0"}
//	}
type rebalanceDetail struct {
	InstanceID string `json:"instance-id"`
}

func rebalanceFromEventBridge(ev eventBridge) (Event, error) {
	var d rebalanceDetail
	if err := decode(ev.Detail, &d); err != nil {
		return Event{}, malformed("rebalance recommendation "+ev.ID, "detail: %v", err)
	}
	if err := cloud.ValidateInstanceID(d.InstanceID); err != nil {
		return Event{}, malformed("rebalance recommendation "+ev.ID, "instance-id: %v", err)
	}
	return Event{ID: "rebalance:" + ev.ID, Kind: KindRebalance, Time: ev.Time, InstanceIDs: []string{d.InstanceID},
		Reason: "EC2 rebalance recommendation"}, nil
}

// snsEnvelope is an SNS notification as an SQS subscriber receives it without raw
// message delivery (https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html):
//
//	{"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
//	 "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic", "Subject": "ALARM: …",
//	 "Message": "{\"AlarmName\":\"cpu-high\",…}", "Timestamp": "2012-05-02T00:54:06.655Z",
//	 "SignatureVersion": "1", "Signature": "…", "SigningCertURL": "…", "UnsubscribeURL": "…"}
type snsEnvelope struct {
	Type      string `json:"Type"`
	MessageID string `json:"MessageId"`
	TopicArn  string `json:"TopicArn"`
	Message   string `json:"Message"`
}

func parseSNS(body []byte, depth int) (Event, error) {
	var env snsEnvelope
	if err := decode(body, &env); err != nil {
		return Event{}, malformed("SNS notification", "%v", err)
	}
	if env.Type != "Notification" {
		return Event{}, ignored("SNS message of type %q from %s (a subscription confirmation is answered in SNS, not here)", env.Type, env.TopicArn)
	}
	inner := []byte(env.Message)
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(inner, &probe); err != nil {
		return Event{}, malformed("SNS notification "+env.MessageID, "Message is not a JSON object: %v", err)
	}
	if _, ok := probe["AlarmName"]; ok {
		if _, ok := probe["NewStateValue"]; ok {
			return parseAlarmNotification(inner, env.MessageID)
		}
	}
	return parse(inner, depth+1)
}

// decode unmarshals strictly in types (a string where a number belongs is an error)
// and leniently in fields (unknown ones are ignored: AWS adds fields over time).
// Trailing data after the object is refused.
func decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("field %s: want %s, got JSON %s", te.Field, te.Type, te.Value)
		}
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}
