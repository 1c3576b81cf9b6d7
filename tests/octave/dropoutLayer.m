function layer = dropoutLayer(varargin)
    % Test double of dropoutLayer([probability], Name=Value).
    args = varargin;
    if ~isempty(args) && isnumeric(args{1})
        args = [{'Probability'}, args];
    end
    layer = hcTestSetProps(nnet.cnn.layer.DropoutLayer(), args);
end
